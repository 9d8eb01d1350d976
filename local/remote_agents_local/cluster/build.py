"""Build etcd, kube-apiserver and kube-controller-manager from the Go module proxy.

k8s.io/kubernetes cannot be `go install`ed at a version: its go.mod replaces every staging
module with a local path. We build it from a wrapper module that requires it and replaces each
staging module with its published tag (Kubernetes v1.N.P <-> staging v0.N.P). The replace list
is read from the real downloaded go.mod so it never goes stale.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from remote_agents_local.cache import cache_root

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
KUBERNETES_BINARIES = ("kube-apiserver", "kube-controller-manager")


class BuildError(RuntimeError):
    """A build step failed; the message names the step and carries go's own words."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path


def kubernetes_bin_dir() -> Path:
    return cache_root() / "kubernetes" / KUBERNETES_VERSION


def etcd_bin_dir() -> Path:
    return cache_root() / "etcd" / ETCD_VERSION


def binaries() -> Binaries:
    return Binaries(
        etcd=etcd_bin_dir() / "etcd",
        kube_apiserver=kubernetes_bin_dir() / "kube-apiserver",
        kube_controller_manager=kubernetes_bin_dir() / "kube-controller-manager",
    )


def is_built() -> bool:
    b = binaries()
    return all(p.is_file() and os.access(p, os.X_OK) for p in (b.etcd, b.kube_apiserver, b.kube_controller_manager))


def _say(message: str) -> None:
    print(f"[cluster build] {message}", file=sys.stderr, flush=True)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env.setdefault("GOFLAGS", "-mod=mod")
    return env


def _run(step: str, args: list[str], cwd: Path, show_progress: bool = False) -> str:
    """Run one go command; on failure raise BuildError naming the step and the tail of its output."""
    if shutil.which(args[0]) is None:
        raise BuildError(f"step '{step}': '{args[0]}' is not installed (Go >= 1.26 is required)")
    started = time.monotonic()
    proc = subprocess.Popen(
        args, cwd=cwd, env=_go_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        if show_progress and len(lines) % 50 == 0:
            _say(f"{step}: {len(lines)} packages compiled ({time.monotonic() - started:.0f}s), at {lines[-1]}")
    code = proc.wait()
    if code != 0:
        tail = "\n".join(lines[-30:])
        raise BuildError(f"step '{step}' failed (exit {code}) running {' '.join(args)}:\n{tail}")
    _say(f"{step}: done in {time.monotonic() - started:.0f}s")
    return "\n".join(lines)


def _staging_replaces(kubernetes_version: str, workdir: Path) -> list[str]:
    out = _run("download k8s.io/kubernetes go.mod",
               ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{kubernetes_version}"], workdir)
    gomod = Path(json.loads(out[out.index("{"):])["GoMod"]).read_text()
    staging_version = "v0." + kubernetes_version.removeprefix("v1.")
    modules = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/src/", gomod, flags=re.M)
    if not modules:
        raise BuildError("step 'read staging modules': no './staging/src' replaces found in k8s.io/kubernetes go.mod")
    return [f"replace {m} => {m} {staging_version}" for m in modules]


def _build_wrapper(name: str, requires: str, replaces: list[str], packages: dict[str, str], out_dir: Path,
                   ldflags: str = "") -> None:
    workdir = cache_root() / "build" / name
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(
        f"module remoteagents.local/build/{name}\n\ngo 1.26\n\nrequire {requires}\n\n" + "\n".join(replaces) + "\n"
    )
    for package in packages.values():
        _run(f"resolve {package}", ["go", "get", "-tool", package], workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for binary, package in packages.items():
        target = out_dir / binary
        partial = out_dir / f".{binary}.partial"
        _say(f"compiling {binary} (cold builds take 10-20 minutes on 2 cores)")
        _run(f"build {binary}",
             ["go", "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(partial), package],
             workdir, show_progress=True)
        partial.replace(target)  # atomic: a half-built binary is never mistaken for a cached one


def _version_ldflags(version: str) -> str:
    major, minor = version.removeprefix("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean"]
    return "-s -w " + " ".join(flags)


def build(force: bool = False) -> Binaries:
    """Build whatever is missing from the cache; a no-op when everything is cached."""
    b = binaries()
    if is_built() and not force:
        _say(f"cached: {b.etcd.parent} and {b.kube_apiserver.parent}")
        return b
    if force or not b.etcd.exists():
        _say(f"building etcd {ETCD_VERSION}")
        _build_wrapper(f"etcd-{ETCD_VERSION}", f"go.etcd.io/etcd/server/v3 {ETCD_VERSION}", [],
                       {"etcd": "go.etcd.io/etcd/server/v3"}, etcd_bin_dir(), "-s -w")
    if force or not (b.kube_apiserver.exists() and b.kube_controller_manager.exists()):
        _say(f"building Kubernetes {KUBERNETES_VERSION}")
        workdir = cache_root() / "build" / f"kubernetes-{KUBERNETES_VERSION}"
        workdir.mkdir(parents=True, exist_ok=True)
        replaces = _staging_replaces(KUBERNETES_VERSION, workdir)
        packages = {name: f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_BINARIES}
        _build_wrapper(f"kubernetes-{KUBERNETES_VERSION}", f"k8s.io/kubernetes {KUBERNETES_VERSION}", replaces,
                       packages, kubernetes_bin_dir(), _version_ldflags(KUBERNETES_VERSION))
    _say("all control-plane binaries are cached")
    return b
