"""The CLI's argument parsing, output formats, kubeconfig targeting, completion and progress lines."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
import yaml

from remote_agents import __version__, cli, cli_output
from remote_agents.client import OrchestratorError, kube_target

NOW = 1_900_000_000.0  # 2030-03-17T17:46:40Z
CREATED = "2030-03-17T17:41:40Z"  # five minutes before NOW


def _agent(name="dexter", ready="True", reason="Ready", message="sandbox is running"):
    return {"apiVersion": "remoteagents.io/v1alpha1", "kind": "RemoteAgent",
            "metadata": {"name": name, "namespace": "research", "generation": 1, "creationTimestamp": CREATED},
            "spec": {"source": {"repo": "o/r"}},
            "status": {"phase": "Ready", "sandboxID": "sbx-1", "shortRevision": "0123456789ab",
                       "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message,
                                       "observedGeneration": 1}]}}


def _task():
    return {"apiVersion": "remoteagents.io/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "q-1", "namespace": "research", "generation": 1, "creationTimestamp": CREATED},
            "spec": {"query": "?", "poolRef": {"name": "quants"}},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False", "reason": "NoAgentFree",
                                                           "message": "all 2 agents are busy"}]}}


# ---- parsing ----------------------------------------------------------------------------------
def test_namespace_defaults_to_none_so_the_context_decides():
    args = cli.build_parser().parse_args(["get"])
    assert args.namespace is None and args.context is None and args.output == "table" and not args.watch
    args = cli.build_parser().parse_args(["get", "--context", "prod", "-n", "ml", "-o", "yaml", "-w"])
    assert (args.context, args.namespace, args.output, args.watch) == ("prod", "ml", "yaml", True)
    query = cli.build_parser().parse_args(["query", "--agent", "a", "--context", "prod", "why?"])
    assert query.context == "prod" and query.namespace is None and query.session is None
    assert cli.build_parser().parse_args(["query", "--pool", "p", "--session", "s1", "and?"]).session == "s1"
    assert query.context == "prod" and query.namespace is None
    assert (query.priority, query.retries) == (0, 0)


def test_query_takes_priority_and_retries_and_cancel_takes_task_names():
    query = cli.build_parser().parse_args(["query", "--pool", "p", "--priority", "7", "--retries", "2", "why?"])
    assert (query.priority, query.retries) == (7, 2)
    cancel = cli.build_parser().parse_args(["cancel", "-n", "ml", "t-1", "t-2"])
    assert cancel.tasks == ["t-1", "t-2"] and cancel.namespace == "ml" and cancel.timeout == 60


@pytest.mark.parametrize("argv", [["get", "-o", "xml"], ["get", "-n", "a", "-A"], ["completion", "tcsh"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.build_parser().parse_args(argv)
    assert exit.value.code == 2


def test_version_is_the_distribution_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.build_parser().parse_args(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"remote-agents {__version__}"
    assert __version__ == metadata.version("remote-agents")


def test_kubectl_plugin_is_an_installed_entry_point_with_its_own_name(capsys):
    scripts = {entry.name: entry.value for entry in metadata.entry_points(group="console_scripts")}
    assert scripts["kubectl-agents"] == "remote_agents.cli:kubectl_plugin"
    assert scripts["kubectl_complete-agents"] == "remote_agents.cli:kubectl_plugin_completion"
    with pytest.raises(SystemExit):
        cli.build_parser("kubectl agents").parse_args(["get", "--help"])
    assert capsys.readouterr().out.startswith("usage: kubectl agents get")


# ---- output -----------------------------------------------------------------------------------
def test_table_and_wide():
    lines = cli_output.table([_agent(), _task()], now=NOW).splitlines()
    assert lines[0].split() == cli_output.HEADER
    assert lines[1].split() == ["RemoteAgent", "research", "dexter", "Ready", "True", "sbx-1", "0123456789ab", "5m"]
    assert lines[2].split()[:4] == ["AgentTask", "research", "q-1", "Pending"]
    assert lines[2].endswith("pool quants, waiting: NoAgentFree")
    wide = cli_output.table([_agent(), _task()], wide=True, now=NOW).splitlines()
    assert wide[0].split()[-2:] == ["REASON", "MESSAGE"]
    assert wide[1].split()[-4:] == ["Ready", "sandbox", "is", "running"]
    assert "NoAgentFree" in wide[2].split() and wide[2].endswith("all 2 agents are busy")


def test_json_and_yaml_are_a_v1_list_of_the_objects():
    objects = [_agent(), _task()]
    for output, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        listed = load(cli_output.render(objects, output))
        assert listed["apiVersion"] == "v1" and listed["kind"] == "List"
        assert listed["items"] == objects


def test_name_is_resource_dot_group_slash_name():
    assert cli_output.render([_agent(), _task()], "name").splitlines() == [
        "remoteagent.remoteagents.io/dexter", "agenttask.remoteagents.io/q-1"]


def test_watched_changes_are_one_line_or_one_document():
    widths = cli_output.watch_widths(wide=False)
    header = cli_output.format_line(cli_output.HEADER, widths)
    line = cli_output.render_change(_agent(), "table", widths, now=NOW)
    # Columns line up under the header printed when the watch started.
    assert line.index("dexter") == header.index("NAME ", header.index("NAMESPACE") + 1) and line.index("sbx-1") == header.index("AGENT/SANDBOX")
    assert json.loads(cli_output.render_change(_agent(), "json", [])) == _agent()
    document = cli_output.render_change(_agent(), "yaml", [])
    assert document.startswith("---\n") and yaml.safe_load(document) == _agent()
    assert cli_output.render_change(_agent(), "name", []) == "remoteagent.remoteagents.io/dexter"


# ---- kubeconfig -------------------------------------------------------------------------------
def _kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dev",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "research"}},
                     {"name": "bare", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


def test_namespace_comes_from_the_chosen_context(tmp_path):
    kubeconfig = _kubeconfig(tmp_path)
    assert kube_target(kubeconfig)[1] == "research"
    assert kube_target(kubeconfig, "bare")[1] == "default"
    with pytest.raises(OrchestratorError, match="context 'prod' is not in the kubeconfig"):
        kube_target(kubeconfig, "prod")


# ---- completion -------------------------------------------------------------------------------
def _complete(line: str, tmp_path) -> list[str]:
    """What the shell would offer after `line`, asked the way the completion script asks."""
    answer = tmp_path / "answer"
    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "bash", "COMP_LINE": line,
           "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(answer), "_ARGCOMPLETE_IFS": "\n"}
    subprocess.run([sys.executable, "-m", "remote_agents.cli"], env=env, timeout=60, check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    return [word.strip() for word in answer.read_text().split("\n")]


def test_completion_offers_commands_and_flags(tmp_path):
    assert "get" in _complete("remote-agents g", tmp_path)
    offered = _complete("remote-agents get -", tmp_path)
    assert {"--output", "--watch", "--context", "--namespace"} <= set(offered)


def test_completion_script_is_valid_bash_for_both_names(capsys):
    assert cli.main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "remote-agents" in script and "kubectl-agents" in script
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


# ---- progress ---------------------------------------------------------------------------------
def test_step_progress_prints_each_step_with_the_time_since_the_first():
    times = iter([100.0, 112.34, 190.0])
    out = io.StringIO()
    progress = cli.StepProgress(clock=lambda: next(times), out=out)
    for step in ("starting the control plane", "installing the CRDs", "ready"):
        progress(step)
    assert out.getvalue().splitlines() == ["[   0.0s] starting the control plane",
                                           "[  12.3s] installing the CRDs", "[  90.0s] ready"]


# ---- logs -------------------------------------------------------------------------------------
class _Followed:
    """An orchestrator whose task wrote `lines` and ended as `result` says."""

    def __init__(self, lines, result, phase="Failed"):
        self.lines, self.result, self.phase = lines, result, phase

    def follow_task(self, name, follow, on_progress=None):
        yield from self.lines

    def get_task(self, name):
        return {"status": {"phase": self.phase}}

    def task_result(self, name):
        return self.result


@pytest.mark.parametrize("result, code, told", [
    ({"task": "t", "success": True, "exit_code": 0}, 0, ""),
    ({"task": "t", "success": False, "exit_code": 3, "reason": "QueryFailed", "error": "exit 3"}, 3, ""),
    ({"task": "t", "success": False, "exit_code": None, "reason": "SandboxLost", "error": "gone"}, 1,
     "task t failed (SandboxLost): gone\n"),
])
def test_logs_splits_the_streams_and_exits_with_the_tasks_code(result, code, told, capsys):
    from remote_agents import cli_client

    lines = [("stdout", "answer\n"), ("stderr", "step 1\n"), ("note", "why\n")]
    assert cli_client._print_output(_Followed(lines, result), "t", follow=True) == code
    out, err = capsys.readouterr()
    assert out == "answer\n" and err == "step 1\nwhy\n" + told


def test_logs_of_a_running_task_without_follow_prints_what_is_there_and_exits_0(capsys):
    from remote_agents import cli_client

    assert cli_client._print_output(_Followed([("stdout", "so far\n")], None, phase="Running"), "t",
                                    follow=False) == 0
    assert capsys.readouterr().out == "so far\n"
