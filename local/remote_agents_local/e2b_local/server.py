"""`remote-agents e2b-local`: run the local E2B-compatible server in the foreground."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
import sys

import uvicorn

from remote_agents_local.e2b_local import config
from remote_agents_local.e2b_local.app import LocalE2BApp
from remote_agents_local.e2b_local.cgroups import CgroupError, SandboxCgroups
from remote_agents_local.e2b_local.faults import Faults
from remote_agents_local.e2b_local.isolation import (BoundaryConfig, BoundaryError, build_exec_helper, find_bwrap,
                                                     hidden_paths, write_identity_files, write_profile)
from remote_agents_local.e2b_local.sandboxes import SandboxManager

log = logging.getLogger("e2b_local")
# Open command streams must not hold up an exit for long; their processes are killed anyway.
GRACEFUL_SHUTDOWN_SECONDS = 2


class _Server(uvicorn.Server):
    """Kills sandbox processes as soon as shutdown starts, so their open streams end."""

    def __init__(self, uvicorn_config: uvicorn.Config, manager: SandboxManager) -> None:
        super().__init__(uvicorn_config)
        self.manager = manager

    async def shutdown(self, sockets=None) -> None:
        self.manager.shutdown()
        await super().shutdown(sockets)


def build_app(settings: config.Settings) -> tuple[LocalE2BApp, SandboxManager]:
    if os.geteuid() != 0:
        raise BoundaryError("e2b-local runs as root: it maps each sandbox's root and user to unprivileged "
                            "host uids and sets cgroup limits (see docs/e2b-local.md)")
    etc = settings.state_dir / "etc"
    etc.mkdir(exist_ok=True, mode=0o700)
    passwd, group = write_identity_files(etc)
    profile = write_profile(etc)
    etc.chmod(0o711)  # the two files are bind-mounted into sandboxes; the dir need not be listable
    boundary = BoundaryConfig(helper=build_exec_helper(settings.state_dir), bwrap=find_bwrap(),
                              uid_base=settings.uid_base,
                              hidden=tuple(hidden_paths(settings.state_dir, settings.hide)),
                              passwd=passwd, group=group, profile=profile)
    # One cgroup subtree per state dir, so two servers never touch each other's sandboxes.
    instance = hashlib.sha1(str(settings.state_dir).encode()).hexdigest()[:10]
    cgroups = SandboxCgroups(instance, settings.pids_max, settings.memory_mb << 20)
    cgroups.require_limits()
    cgroups.reap_leftovers()
    manager = SandboxManager(settings, boundary, cgroups)
    log.info("state dir %s, sandboxes: bubblewrap %s + %s, uids %d+, hidden %s; cgroups: %s; %d sandboxes loaded",
             settings.state_dir, boundary.bwrap, boundary.helper.name, settings.uid_base,
             ", ".join(boundary.hidden) or "-", cgroups.mode, len(manager.store.sandboxes))
    return LocalE2BApp(manager, settings.api_key, Faults(settings)), manager


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound (port 0: a free one), for uvicorn to listen on."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it. Without it, a response written as headers then body (every
    # one here) holds the body back until the client acknowledges the headers: Nagle's algorithm
    # against the client's delayed ACK, 40 ms per call. asyncio sets it only on sockets whose
    # protocol number it can read, which accepted ones do not report.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _quiet_dropped_calls(record: logging.LogRecord) -> bool:
    """A call cut off because its sandbox went away (app._dropped_when_gone) is expected, not an
    application error: one line instead of uvicorn's traceback."""
    if record.exc_info and isinstance(record.exc_info[1], ConnectionAbortedError):
        log.info("dropped a call in flight: %s", record.exc_info[1])
        return False
    return True


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_quiet_dropped_calls)
    try:
        settings = config.from_args(args)
    except config.ConfigError as error:
        print(f"e2b-local: {error}", file=sys.stderr)
        return 2
    try:
        app, manager = build_app(settings)
    except (BoundaryError, CgroupError) as error:
        print(f"e2b-local: {error}", file=sys.stderr)
        return 1
    # Bind first so that port 0 yields the real port before anything is printed.
    try:
        sock = listening_socket(settings.host, settings.port)
    except OSError as error:
        print(f"e2b-local: cannot listen on {settings.host}:{settings.port}: {error}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    url = f"http://{host}:{port}"
    print(f"E2B_API_URL={url}\nE2B_SANDBOX_URL={url}\nE2B_API_KEY={settings.api_key}", flush=True)
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", http="httptools",
                                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS), manager)
    server.run(sockets=[sock])
    return 0
