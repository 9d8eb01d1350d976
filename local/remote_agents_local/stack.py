"""`remote-agents up` / `down`: the whole system on one machine with embedded defaults.

The real control plane, e2b-local as the sandbox backend, a git daemon serving a sample agent,
the operator, and one sample RemoteAgent. Everything runs in the background under one state
directory, so `up` is idempotent and `down` stops exactly what `up` started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from remote_agents_local import processes, research_demo
from remote_agents.api import crds
from remote_agents_local.cluster import control_plane

DEMO_NAMESPACE = "remote-agents-demo"
SAMPLE_AGENT = "sample-agent"
E2B_KEY_FILE = "e2b-api-key"


class StackError(RuntimeError):
    pass


@dataclass
class Stack:
    kubeconfig: str
    e2b_url: str
    git_url: str
    pids: dict[str, int]


def default_state_dir() -> Path:
    return processes.state_root() / "stack"


def _kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    result = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], input=input, text=True,
                            capture_output=True, timeout=180)
    if result.returncode != 0:
        raise StackError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _wait_http(url: str, log: Path, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise StackError(f"{what} did not answer at {url}; its log:\n{processes.log_tail(log)}")


def _sample_repository(root: Path) -> Path:
    """A bare repository with the packaged sample agent as its one commit on main."""
    bare = root / "git" / f"{SAMPLE_AGENT}.git"
    if bare.exists():
        return bare
    work = root / "git" / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sample = resources.files("remote_agents_local.samples") / "sample_agent"
    for item in sample.iterdir():
        (work / item.name).write_bytes(item.read_bytes())
    (work / "answer.sh").chmod(0o755)
    git = ["git", "-C", str(work), "-c", "user.name=remote-agents", "-c", "user.email=up@remote-agents.local"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "sample agent"]):
        subprocess.run(git + args, check=True, capture_output=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, capture_output=True)
    return bare


def _sample_agent_manifest(repo_url: str) -> str:
    return json.dumps({
        "apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
        "metadata": {"name": SAMPLE_AGENT, "namespace": DEMO_NAMESPACE},
        "spec": {"source": {"repo": repo_url, "ref": "main"}, "setup": ["chmod +x answer.sh"],
                 "query": {"command": "./answer.sh", "timeoutSeconds": 120}},
    })


def _e2b_api_key(root: Path) -> str:
    """This state dir's random e2b-local key (0600), made on first `up`: e2b-local gets it in its
    environment, the operator as E2B_API_KEY; never on a command line."""
    path = root / E2B_KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"e2b_{secrets.token_hex(20)}\n")
    return path.read_text().strip()


def _load(root: Path) -> Stack | None:
    try:
        return Stack(**json.loads((root / "stack.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def up(root: Path, progress: Callable[[str], None] = lambda step: None) -> Stack:
    """`progress` is told each step as it starts."""
    existing = _load(root)
    if existing and all(processes.alive(pid) for pid in existing.pids.values()) and \
            control_plane.running(root / "cluster"):
        progress("already running")
        return existing
    progress("stopping what an earlier run left")
    down(root, keep_cluster=True)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)
    e2b_key = _e2b_api_key(root)
    progress("starting the control plane (etcd, kube-apiserver, kube-controller-manager)")
    cluster = control_plane.up(root / "cluster")
    progress("installing the CRDs")
    kubeconfig = cluster.kubeconfig
    _kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-",
             input=json.dumps({"apiVersion": "v1", "kind": "List", "items": crds.definitions()}))
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
             *[f"crd/{crd['metadata']['name']}" for crd in crds.definitions()])

    pids: dict[str, int] = {}
    e2b_port, git_port = processes.free_port(), processes.free_port()
    e2b_url = f"http://127.0.0.1:{e2b_port}"
    progress("starting e2b-local")
    pids["e2b-local"] = processes.start_detached(
        [sys.executable, "-m", "remote_agents_local.e2b_local", "--port", str(e2b_port), "--state-dir", str(root / "e2b")],
        root / "e2b-local.log", env={**os.environ, "E2B_LOCAL_API_KEY": e2b_key})
    _wait_http(f"{e2b_url}/health", root / "e2b-local.log", "e2b-local")

    progress("starting the git daemon with the sample agent's repository")
    bare = _sample_repository(root)
    pids["git-daemon"] = processes.start_detached(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={bare.parent}", f"--port={git_port}",
         "--listen=127.0.0.1", str(bare.parent)], root / "git-daemon.log")
    git_url = f"git://127.0.0.1:{git_port}/{bare.name}"
    demo = research_demo.available()
    if demo:
        progress("starting the LLM and market-data stand-ins for the research-demo agent")
        research_demo.repository(root)
        standin_pids, llm_url, market_url = research_demo.start_standins(root)
        pids.update(standin_pids)
        _wait_http(f"{llm_url}/health", root / "llm-standin.log", "the LLM stand-in")
        _wait_http(f"{market_url}/_requests", root / "market-data.log", "the market-data stand-in")

    operator_env = {**os.environ, "KUBECONFIG": kubeconfig, "E2B_API_URL": e2b_url, "E2B_SANDBOX_URL": e2b_url,
                    "E2B_API_KEY": e2b_key}
    operator_env.pop("E2B_DEBUG", None)
    progress("starting the operator")
    pids["operator"] = processes.start_detached([sys.executable, "-m", "remote_agents.cli", "operator"],
                                                root / "operator.log", env=operator_env)
    stack = Stack(kubeconfig=kubeconfig, e2b_url=e2b_url, git_url=git_url, pids=pids)
    (root / "stack.json").write_text(json.dumps(asdict(stack)))

    progress(f"creating RemoteAgent {DEMO_NAMESPACE}/{SAMPLE_AGENT} and waiting for it to be Ready")
    _kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}}))
    _kubectl(kubeconfig, "apply", "-f", "-", input=_sample_agent_manifest(git_url))
    if demo:
        _kubectl(kubeconfig, "apply", "-f", "-", input=research_demo.manifest(
            DEMO_NAMESPACE, git_url.replace(bare.name, f"{research_demo.NAME}.git"), llm_url, market_url))
    try:
        _kubectl(kubeconfig, "wait", "--for=condition=Ready", "--timeout=120s", f"remoteagent/{SAMPLE_AGENT}",
                 "-n", DEMO_NAMESPACE)
    except StackError as error:
        raise StackError(f"the sample agent did not become Ready: {error}\noperator log:\n"
                         f"{processes.log_tail(root / 'operator.log')}") from None
    if demo:
        # Its template's build installs Bun and its dependencies from npm first: longer than the sample.
        progress(f"waiting for RemoteAgent {DEMO_NAMESPACE}/{research_demo.NAME} to be Ready")
        try:
            _kubectl(kubeconfig, "wait", "--for=condition=Ready", "--timeout=300s",
                     f"remoteagent/{research_demo.NAME}", "-n", DEMO_NAMESPACE)
        except StackError as error:
            raise StackError(f"the research-demo agent did not become Ready: {error}\noperator log:\n"
                             f"{processes.log_tail(root / 'operator.log')}") from None
    progress("ready")
    return stack


def down(root: Path, keep_cluster: bool = False) -> None:
    stack = _load(root)
    if stack:
        for name in ("operator", "git-daemon", "llm-standin", "market-data", "e2b-local"):
            pid = stack.pids.get(name)
            if pid:
                # e2b-local leads a process group holding its sandboxes' processes: stop them all.
                processes.terminate(pid, group=name == "e2b-local")
        (root / "stack.json").unlink(missing_ok=True)
    if not keep_cluster:
        control_plane.down(root / "cluster")


def summary(stack: Stack, root: Path) -> str:
    kube = f"KUBECONFIG={stack.kubeconfig}"
    return "\n".join([
        "remote-agents is up:",
        f"  Kubernetes API     kube-apiserver + etcd + kube-controller-manager ({kube})",
        f"  E2B (local)        {stack.e2b_url}  (e2b-local, log {root / 'e2b-local.log'})",
        f"  operator           pid {stack.pids['operator']}  (log {root / 'operator.log'})",
        f"  sample agent repo  {stack.git_url}",
        f"  sample agent       RemoteAgent {DEMO_NAMESPACE}/{SAMPLE_AGENT}",
        *([f"  research-demo      RemoteAgent {DEMO_NAMESPACE}/{research_demo.NAME} (Bun, LangChain; answers "
           f"through the LLM stand-in, pid {stack.pids['llm-standin']})",
           f"  ask it             remote-agents query --agent {research_demo.NAME} -n {DEMO_NAMESPACE} "
           "\"What is the price of ACME?\""] if "llm-standin" in stack.pids else []),
        "",
        "Look at it:",
        f"  export {kube}",
        "  kubectl get remoteagents,agentpools,agenttasks -A",
        f"  kubectl describe remoteagent {SAMPLE_AGENT} -n {DEMO_NAMESPACE}",
        f"  kubectl get events -n {DEMO_NAMESPACE}",
        f"  kubectl patch ra {SAMPLE_AGENT} -n {DEMO_NAMESPACE} --type=merge -p '{{\"spec\":{{\"paused\":true}}}}'",
        "Stop it:  remote-agents down",
        "",
        kube,
    ])
