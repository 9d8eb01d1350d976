"""Start and stop etcd + kube-apiserver + kube-controller-manager on loopback, in the background.

Everything lives in one state directory: data, logs, key material, the admin kubeconfig and a
`state.json` with the pids and ports, so `up` is idempotent and `down` stops exactly what it started.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from remote_agents_local import processes
from remote_agents_local.cluster import build, pki

HEALTH_TIMEOUT_SECONDS = 120
# Only what a cluster without nodes needs: ownerReference cascades, namespace deletion, default SAs.
CONTROLLERS = "garbage-collector-controller,namespace-controller,serviceaccount-controller"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message says which component and why."""


@dataclass
class Cluster:
    state_dir: str
    kubeconfig: str
    api_port: int
    etcd_port: int
    pids: dict[str, int]
    etcd_peer_port: int = 0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"


def state_dir(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    return processes.state_root() / "cluster"


def _ready(server: str, ca_cert: Path, token: str) -> bool:
    context = ssl.create_default_context(cafile=str(ca_cert))
    request = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _load(directory: Path) -> Cluster | None:
    try:
        return Cluster(**json.loads((directory / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_kubeconfig(path: Path, server: str, keys: pki.Pki) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "remote-agents-local",
                      "cluster": {"server": server, "certificate-authority": str(keys.ca_cert)}}],
        "users": [{"name": "admin", "user": {"token": keys.admin_token}}],
        "contexts": [{"name": "remote-agents-local",
                      "context": {"cluster": "remote-agents-local", "user": "admin"}}],
        "current-context": "remote-agents-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _reuse_or_free(port: int | None) -> int:
    if port:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as etcd and the apiserver bind
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                pass
    return processes.free_port()


def _start(name: str, args: list[str], logs: Path) -> int:
    return processes.start_detached(args, logs / f"{name}.log")


def _wait(cluster: Cluster, keys: pki.Pki, logs: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for name, pid in cluster.pids.items():
            if not processes.alive(pid):
                raise ControlPlaneError(f"{name} exited during start-up; last lines of its log:\n"
                                        f"{processes.log_tail(logs / f'{name}.log')}")
        if _ready(cluster.server, keys.ca_cert, keys.admin_token):
            return
        time.sleep(0.5)
    raise ControlPlaneError(f"kube-apiserver was not ready within {HEALTH_TIMEOUT_SECONDS}s; "
                            f"its log:\n{processes.log_tail(logs / 'kube-apiserver.log')}")


def running(directory: Path) -> Cluster | None:
    """The cluster recorded in `directory` if all its processes live and the API answers."""
    cluster = _load(directory)
    if cluster is None or not all(processes.alive(pid) for pid in cluster.pids.values()):
        return None
    keys = pki.ensure(directory / "pki")
    return cluster if _ready(cluster.server, keys.ca_cert, keys.admin_token) else None


def up(directory: Path) -> Cluster:
    existing = running(directory)
    if existing is not None:
        return existing
    previous = _load(directory)
    down(directory)  # whatever half of a previous run is still around
    binaries = build.build()
    directory.mkdir(parents=True, exist_ok=True)
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    keys = pki.ensure(directory / "pki")
    # A restart keeps its ports (when still free), so kubeconfigs handed out before stay valid.
    etcd_port, etcd_peer_port, api_port = (_reuse_or_free(previous and previous.etcd_port),
                                           _reuse_or_free(previous and previous.etcd_peer_port),
                                           _reuse_or_free(previous and previous.api_port))
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = directory / "kubeconfig"
    _write_kubeconfig(kubeconfig, server, keys)
    pids = {"etcd": _start("etcd", [
        str(binaries.etcd), "--data-dir", str(directory / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
        "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer_port}",
        "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer_port}",
        "--unsafe-no-fsync", "--quota-backend-bytes", str(4 * 1024**3),
    ], logs)}
    pids["kube-apiserver"] = _start("kube-apiserver", [
        str(binaries.kube_apiserver),
        "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
        "--bind-address", "127.0.0.1", "--secure-port", str(api_port),
        "--tls-cert-file", str(keys.serving_cert), "--tls-private-key-file", str(keys.serving_key),
        "--client-ca-file", str(keys.ca_cert), "--token-auth-file", str(keys.token_file),
        "--authorization-mode", "RBAC",
        "--service-cluster-ip-range", "10.0.0.0/24", "--allow-privileged=true",
        "--disable-admission-plugins", "ServiceAccount",
        "--service-account-issuer", f"{server}/",
        "--service-account-key-file", str(keys.service_account_key),
        "--service-account-signing-key-file", str(keys.service_account_key),
        "--endpoint-reconciler-type", "none",
    ], logs)
    cluster = Cluster(state_dir=str(directory), kubeconfig=str(kubeconfig), api_port=api_port,
                      etcd_port=etcd_port, pids=pids, etcd_peer_port=etcd_peer_port)
    (directory / "state.json").write_text(json.dumps(asdict(cluster)))
    _wait(cluster, keys, logs)
    pids["kube-controller-manager"] = _start("kube-controller-manager", [
        str(binaries.kube_controller_manager), "--kubeconfig", str(kubeconfig),
        "--controllers", CONTROLLERS, "--use-service-account-credentials=false",
        "--leader-elect=false", "--secure-port", "0",
        "--service-account-private-key-file", str(keys.service_account_key),
        "--root-ca-file", str(keys.ca_cert),
    ], logs)
    (directory / "state.json").write_text(json.dumps(asdict(cluster)))
    time.sleep(1)
    if not processes.alive(pids["kube-controller-manager"]):
        raise ControlPlaneError("kube-controller-manager exited during start-up; last lines of its log:\n"
                                f"{processes.log_tail(logs / 'kube-controller-manager.log')}")
    return cluster


def down(directory: Path, grace_seconds: float = 10) -> None:
    """Stop the processes recorded in `directory` (controller-manager first, etcd last)."""
    cluster = _load(directory)
    if cluster is None:
        return
    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
        pid = cluster.pids.get(name)
        if pid is not None:
            processes.terminate(pid, grace_seconds)
    (directory / "state.json").unlink(missing_ok=True)
