"""The `remote-agents` command. Each subcommand imports its implementation lazily so that
`remote-agents cluster up` does not pay for importing Kopf or the E2B SDK."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from remote_agents import __version__
from remote_agents.cli_output import OUTPUTS

# Where completion is installed for both names: the command and the kubectl plugin.
PROGRAMS = ("remote-agents", "kubectl-agents")


def _cluster_build(args: argparse.Namespace) -> int:
    from remote_agents_local.cluster import build

    try:
        build.build(force=args.force)
    except build.BuildError as error:
        print(f"cluster build failed: {error}", file=sys.stderr)
        return 1
    return 0


def _cluster_up(args: argparse.Namespace) -> int:
    from remote_agents_local.cluster import build, control_plane

    try:
        cluster = control_plane.up(control_plane.state_dir(args.state_dir))
    except (build.BuildError, control_plane.ControlPlaneError) as error:
        print(f"cluster up failed: {error}", file=sys.stderr)
        return 1
    print(f"KUBECONFIG={cluster.kubeconfig}")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    from remote_agents_local.cluster import control_plane

    control_plane.down(control_plane.state_dir(args.state_dir))
    return 0


def _e2b_local(args: argparse.Namespace) -> int:
    from remote_agents_local.e2b_local.__main__ import main as e2b_local_main

    return e2b_local_main(args.options)


def _llm_standin(args: argparse.Namespace) -> int:
    from remote_agents_local.llm_standin.server import main as llm_standin_main

    return llm_standin_main(args.options)


def _operator(args: argparse.Namespace) -> int:
    from remote_agents.controller import main as operator_main

    return operator_main.run(args)


def _crds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from remote_agents.api import crds

    directory = Path(args.dir)
    if args.check:
        stale = crds.stale(directory)
        if stale:
            print(f"stale CRDs in {directory}: {', '.join(stale)}; run `remote-agents crds` and commit",
                  file=sys.stderr)
            return 1
        print(f"{directory} is up to date")
        return 0
    for path in crds.write(directory):
        print(path)
    return 0


def _manifests(args: argparse.Namespace) -> int:
    from remote_agents.deploy import manifests

    return manifests.run(args, manifests.files(tuple(args.watch_namespace)))


def _monitoring(args: argparse.Namespace) -> int:
    from remote_agents.deploy import manifests, monitoring

    return manifests.run(args, monitoring.files(), "remote-agents monitoring")


def _chart(args: argparse.Namespace) -> int:
    from remote_agents.deploy import chart

    return chart.run(args)


def _add_operator(sub: argparse._SubParsersAction) -> None:
    from remote_agents.controller.options import add_arguments
    from remote_agents.deploy.options import add_arguments as add_manifest_arguments

    parser = sub.add_parser("operator", help="run the operator (kubeconfig from the environment)")
    add_arguments(parser)
    parser.set_defaults(func=_operator)
    manifests = sub.add_parser("manifests", help="write the kustomize base from remote_agents.deploy")
    add_manifest_arguments(manifests)
    manifests.set_defaults(func=_manifests)
    for name, func, directory, text in (
            ("crds", _crds, "crds", "write the CRDs generated from the typed models"),
            ("monitoring", _monitoring, "manifests/monitoring",
             "write the ServiceMonitor, PrometheusRule and Grafana dashboard"),
            ("chart", _chart, "charts/remote-agents", "write the Helm chart's generated files (values, CRDs, RBAC)")):
        generator = sub.add_parser(name, help=text)
        generator.add_argument("--dir", default=directory)
        generator.add_argument("--check", action="store_true", help="fail if the files differ from their source")
        generator.set_defaults(func=func)


class StepProgress:
    """Prints each step of a long command on stderr as it starts, with the time since the first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, out=None):
        self.clock = clock
        self.out = out
        self.started: float | None = None

    def __call__(self, step: str) -> None:
        now = self.clock()
        if self.started is None:
            self.started = now
        print(f"[{now - self.started:6.1f}s] {step}", file=self.out or sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    from pathlib import Path

    from remote_agents_local import stack as local_stack
    from remote_agents_local.cluster import build, control_plane

    root = Path(args.state_dir).resolve() if args.state_dir else local_stack.default_state_dir()
    try:
        stack = local_stack.up(root, progress=StepProgress())
    except (build.BuildError, control_plane.ControlPlaneError, local_stack.StackError) as error:
        print(f"remote-agents up failed: {error}", file=sys.stderr)
        return 1
    print(local_stack.summary(stack, root))
    return 0


def _down(args: argparse.Namespace) -> int:
    from pathlib import Path

    from remote_agents_local import stack as local_stack

    local_stack.down(Path(args.state_dir).resolve() if args.state_dir else local_stack.default_state_dir())
    return 0


def _add_stack(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (
            ("up", _up, "run everything locally: control plane, e2b-local, operator and a sample agent"),
            ("down", _down, "stop everything `up` started")):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("--state-dir", help="where it all lives (default ~/.local/state/remote-agents/stack)")
        parser.set_defaults(func=func)


def _add_cluster(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser("cluster", help="a real local Kubernetes control plane")
    actions = cluster.add_subparsers(dest="cluster_command", required=True)
    build = actions.add_parser("build", help="build and cache etcd, kube-apiserver, kube-controller-manager")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    build.set_defaults(func=_cluster_build)
    for name, func, text in (("up", _cluster_up, "start it (builds first if needed)"),
                             ("down", _cluster_down, "stop everything `up` started")):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("--state-dir", help="where its data, logs and kubeconfig live")
        parser.set_defaults(func=func)


def _add_e2b_local(sub: argparse._SubParsersAction) -> None:
    # Its options are the local distribution's own: main() hands them over unparsed, so the
    # operator's CLI does not spell them again.
    sub.add_parser("e2b-local", help="a local E2B-compatible sandbox server (foreground; --help lists its options)")
    sub.add_parser("llm-standin", help="a scripted local stand-in for the OpenAI API (foreground; --help lists "
                                       "its options)")


# Commands of the local distribution whose options are their own: main() hands them over unparsed.
PASSTHROUGH = {"e2b-local": _e2b_local, "llm-standin": _llm_standin}


def _query(args: argparse.Namespace) -> int:
    from remote_agents import cli_client

    return cli_client.query(args)


def _logs(args: argparse.Namespace) -> int:
    from remote_agents import cli_client

    return cli_client.logs(args)


def _cancel(args: argparse.Namespace) -> int:
    from remote_agents import cli_client

    return cli_client.cancel(args)


def _get(args: argparse.Namespace) -> int:
    from remote_agents import cli_client

    return cli_client.get(args)


def _add_kube_target(parser: argparse.ArgumentParser, namespace_group=None) -> None:
    """--context and -n, picked like kubectl's: the namespace defaults to the context's."""
    parser.add_argument("--context", help="kubeconfig context to use (default: the current context)")
    (namespace_group or parser).add_argument(
        "-n", "--namespace", help="namespace (default: the kubeconfig context's namespace, else default)")


def _add_client(sub: argparse._SubParsersAction) -> None:
    query = sub.add_parser("query", help="ask an agent or a pool a question and print the answer")
    target = query.add_mutually_exclusive_group(required=True)
    target.add_argument("--agent", help="a RemoteAgent's name")
    target.add_argument("--pool", help="an AgentPool's name (whichever of its agents is free answers)")
    _add_kube_target(query)
    query.add_argument("--timeout", type=int, default=900, help="seconds the query may run (default 900)")
    query.add_argument("--session", help="continue (or start) this conversation: it runs on the agent that "
                                         "holds the session, after its earlier questions")
    query.add_argument("--follow", "-f", action="store_true",
                       help="stream the run's stdout and stderr live from the sandbox (needs its E2B key)")
    query.add_argument("--priority", type=int, default=0, help="higher runs first on a busy agent or pool (default 0)")
    query.add_argument("--retries", type=int, default=0,
                       help="new attempts if the sandbox or agent is lost mid-run (default 0)")
    query.add_argument("question")
    query.set_defaults(func=_query)
    logs = sub.add_parser("logs", help="a task's stdout and stderr, read from its sandbox (exit code: the task's)")
    _add_kube_target(logs)
    logs.add_argument("task", help="an AgentTask's name")
    logs.add_argument("-f", "--follow", action="store_true", help="stream it live until the run ends")
    logs.set_defaults(func=_logs)
    cancel = sub.add_parser("cancel", help="cancel tasks (deletes them; a running one is stopped in its sandbox)")
    _add_kube_target(cancel)
    cancel.add_argument("--timeout", type=int, default=60, help="seconds to wait for each to be gone (default 60)")
    cancel.add_argument("tasks", nargs="+", metavar="TASK")
    cancel.set_defaults(func=_cancel)
    get = sub.add_parser("get", help="agents, pools and recent tasks in one table")
    scope = get.add_mutually_exclusive_group()
    _add_kube_target(get, scope)
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                     help="table (default), wide (adds the Ready reason and message), json or yaml (a v1 List), "
                          "name (kind.group/name)")
    get.add_argument("-w", "--watch", action="store_true",
                     help="after the objects, print each change as it happens (until interrupted)")
    get.set_defaults(func=_get)


def _completion(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(list(PROGRAMS), shell=args.shell))
    return 0


def _add_completion(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("completion", help="print a shell completion script, e.g. "
                                               "`source <(remote-agents completion bash)`")
    parser.add_argument("shell", choices=("bash", "zsh", "fish"))
    parser.set_defaults(func=_completion)


def build_parser(prog: str = PROGRAMS[0]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run AI research agents in E2B sandboxes, declared as Kubernetes objects.")
    parser.add_argument("--version", action="version", version=f"remote-agents {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stack(sub)
    _add_cluster(sub)
    _add_e2b_local(sub)
    _add_operator(sub)
    _add_client(sub)
    _add_completion(sub)
    return parser


def main(argv: list[str] | None = None, prog: str = PROGRAMS[0]) -> int:
    parser = build_parser(prog)
    import argcomplete

    argcomplete.autocomplete(parser)  # answers and exits when the shell asks for completions
    argv = sys.argv[1:] if argv is None else argv
    # e2b-local's and llm-standin's options are their own: they go to them unparsed (see _add_e2b_local).
    args = argparse.Namespace(command=argv[0], func=PASSTHROUGH[argv[0]], options=argv[1:]) \
        if argv[:1] and argv[0] in PASSTHROUGH else parser.parse_args(argv)
    try:
        return args.func(args)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "remote_agents_local":
            raise
        print(f"`remote-agents {args.command}` runs things locally and needs the local extra, a distribution of "
              "its own: pip install -e ./local (from a checkout of the repository)", file=sys.stderr)
        return 2


def kubectl_plugin() -> int:
    """`kubectl agents ...`: kubectl runs the kubectl-agents executable with the rest of the line."""
    return main(prog="kubectl agents")


def kubectl_plugin_completion() -> int:
    """`kubectl agents <TAB>`: kubectl runs kubectl_complete-agents with the words after `agents`
    (the last one is being completed) and reads cobra's answer: a completion per line, then
    `:4` (no file names)."""
    import io
    import os

    import argcomplete

    line = " ".join([PROGRAMS[1], *sys.argv[1:]])
    os.environ.update({"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)), "_ARGCOMPLETE_IFS": "\n"})
    answer = io.StringIO()
    argcomplete.autocomplete(build_parser("kubectl agents"), output_stream=answer, exit_method=lambda code: None,
                             append_space=False)
    print("\n".join([word for word in answer.getvalue().split("\n") if word] + [":4"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
