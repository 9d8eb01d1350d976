"""Server settings, from the command line and the environment.

The API key never travels on a command line (any process on the machine can read argv): it comes
from E2B_LOCAL_API_KEY, from the file named by --api-key-file / E2B_LOCAL_API_KEY_FILE, or else is
generated once per state dir into `STATE/api-key` (0600)."""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from remote_agents_local.processes import state_root

API_KEY_ENV = "E2B_LOCAL_API_KEY"
API_KEY_FILE_ENV = "E2B_LOCAL_API_KEY_FILE"
API_KEY_FILE = "api-key"
# Operations that accept --latency / --error-rate.
OPERATIONS = ("create", "connect", "pause", "kill", "list", "info", "timeout", "envd", "templates")
# The envd version reported to clients: the SDK gates features on it (0.6.x passes all gates).
ENVD_VERSION = "0.6.8"
DEFAULT_SANDBOX_TIMEOUT = 300
# Per-sandbox limits (a template's defaults on E2B): tasks (processes + threads) and memory.
DEFAULT_PIDS_MAX = 1024
DEFAULT_MEMORY_MB = 2048
# Host uids/gids BASE..BASE+65535 are the sandboxes' 0..65535 (root = BASE, user = BASE+1000).
DEFAULT_UID_BASE = 200000


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    api_key: str
    state_dir: Path
    max_running: int
    max_timeout: int
    latency: dict[str, float] = field(default_factory=dict)
    error_rate: dict[str, float] = field(default_factory=dict)
    # None -> an unseeded RNG; set E2B_LOCAL_SEED to make injected faults reproducible.
    seed: int | None = None
    pids_max: int = DEFAULT_PIDS_MAX
    memory_mb: int = DEFAULT_MEMORY_MB
    uid_base: int = DEFAULT_UID_BASE
    # Host paths hidden from sandboxes besides the built-in ones (see isolation.hidden_paths).
    hide: tuple[str, ...] = ()
    max_upload_bytes: int = 1 << 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=49982)
    parser.add_argument("--api-key-file", default=None,
                        help=f"file holding the key clients must send (else ${API_KEY_ENV}, else STATE/api-key)")
    parser.add_argument("--state-dir", default=None)
    parser.add_argument("--latency", action="append", default=[], metavar="OP=SECONDS")
    parser.add_argument("--error-rate", action="append", default=[], metavar="OP=FRACTION")
    parser.add_argument("--max-running", type=int, default=20, help="concurrently running sandboxes (429 above)")
    parser.add_argument("--max-timeout", type=int, default=3600, help="maximum sandbox timeout in seconds")
    parser.add_argument("--pids-max", type=int, default=DEFAULT_PIDS_MAX, help="tasks per sandbox (pids.max)")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, help="memory per sandbox (memory.max)")
    parser.add_argument("--uid-base", type=int, default=DEFAULT_UID_BASE,
                        help="host uid of sandbox root; sandbox uid N is host uid BASE+N")
    parser.add_argument("--hide", action="append", default=[], metavar="PATH",
                        help="another host path sandboxes must not see")
    parser.add_argument("--max-upload-mb", type=int, default=1024, help="largest file accepted by POST /files")


def _parse_pairs(values: list[str], what: str) -> dict[str, float]:
    pairs: dict[str, float] = {}
    for item in values or []:
        op, sep, number = item.partition("=")
        if not sep or op not in OPERATIONS:
            raise ConfigError(f"--{what} expects OP=NUMBER with OP in {', '.join(OPERATIONS)}; got {item!r}")
        try:
            pairs[op] = float(number)
        except ValueError:
            raise ConfigError(f"--{what} {item!r}: {number!r} is not a number") from None
        if pairs[op] < 0 or (what == "error-rate" and pairs[op] > 1):
            raise ConfigError(f"--{what} {item!r} is out of range")
    return pairs


def prepare_state_dir(state_dir: Path) -> None:
    """The state dir holds every sandbox's files and tokens: its owner alone may enter it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)


def _read_key(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"cannot read the API key file {path}: {error.strerror}") from None
    if not key:
        raise ConfigError(f"the API key file {path} is empty")
    return key


def api_key(state_dir: Path, key_file: str | None) -> str:
    if os.environ.get(API_KEY_ENV):
        return os.environ[API_KEY_ENV]
    key_file = key_file or os.environ.get(API_KEY_FILE_ENV)
    if key_file:
        return _read_key(Path(key_file).expanduser())
    generated = state_dir / API_KEY_FILE
    if not generated.exists():
        fd = os.open(generated, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"e2b_{secrets.token_hex(20)}\n")
    return _read_key(generated)


def from_args(args: argparse.Namespace) -> Settings:
    if getattr(args, "api_key", None):
        raise ConfigError(f"--api-key is not accepted (argv is readable by every process): set {API_KEY_ENV} "
                          f"or pass --api-key-file")
    seed = os.environ.get("E2B_LOCAL_SEED")
    state_dir = Path(args.state_dir).expanduser().resolve() if args.state_dir else state_root() / "e2b-local"
    prepare_state_dir(state_dir)
    numbers = {name: getattr(args, name, default) for name, default in
               (("pids_max", DEFAULT_PIDS_MAX), ("memory_mb", DEFAULT_MEMORY_MB), ("uid_base", DEFAULT_UID_BASE))}
    if numbers["pids_max"] < 8 or numbers["memory_mb"] < 16 or numbers["uid_base"] < 1000:
        raise ConfigError("--pids-max must be >= 8, --memory-mb >= 16 and --uid-base >= 1000")
    return Settings(
        host=args.host,
        port=args.port,
        api_key=api_key(state_dir, getattr(args, "api_key_file", None)),
        state_dir=state_dir,
        max_running=args.max_running,
        max_timeout=args.max_timeout,
        latency=_parse_pairs(args.latency, "latency"),
        error_rate=_parse_pairs(args.error_rate, "error-rate"),
        seed=int(seed) if seed else None,
        hide=tuple(getattr(args, "hide", ()) or ()),
        max_upload_bytes=getattr(args, "max_upload_mb", 1024) * (1 << 20),
        **numbers,
    )
