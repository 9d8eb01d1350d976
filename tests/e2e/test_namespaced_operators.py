"""Two operators, each serving one namespace, on one cluster and one E2B endpoint (they share the
cluster tag): restarted and swept again and again, neither touches the other's sandboxes."""

from __future__ import annotations

from remote_agents_local import processes
from tests.e2e.conftest import FAST_OPERATOR_ARGS
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.kubectl import eventually
from tests.support.operator_process import OperatorProcess
from tests.support.sandbox_safety import CREATES, KILLS, e2b_requests, swept

RESTARTS = 3


def test_namespaced_operators_never_touch_each_others_sandboxes(cluster, crds, kubectl, e2b, e2b_client, namespace,
                                                                 agent_repo, tmp_path):
    namespaces = [namespace, f"{namespace[:50]}-b"]
    kubectl.run("create", "namespace", namespaces[1])
    operators: dict[str, OperatorProcess] = {}
    try:
        for served in namespaces:
            port = processes.free_port()
            operators[served] = OperatorProcess(
                cluster.kubeconfig, e2b.env, tmp_path / f"{served}.log", *FAST_OPERATOR_ARGS,
                "--namespace", served, "--metrics-port", str(port)).start()
            operators[served].metrics_url = f"http://127.0.0.1:{port}"
            kubectl.apply(agent_manifest("runner", served, agent_repo.url))
            kubectl.apply(agent_manifest("sleeper", served, agent_repo.url, paused=True))
        agents = {(served, name): wait_ready(kubectl, name, served, timeout=180)
                  for served in namespaces for name in ("runner", "sleeper")}
        creates, kills = e2b_requests(e2b, CREATES), e2b_requests(e2b, KILLS)

        for _ in range(RESTARTS):
            for operator in operators.values():
                operator.restart()
            for operator in operators.values():
                swept(operator)  # from its restart on: the metric starts at zero

        for (served, name), agent in agents.items():
            found = e2b_client.by_uid(agent["metadata"]["uid"])
            assert [s.sandbox_id for s in found] == [agent["status"]["sandboxID"]], f"{served}/{name}: {found}"
            assert str(found[0].state.value) == ("paused" if name == "sleeper" else "running"), f"{served}/{name}"
            assert kubectl.get("ra", name, served)["status"]["sandboxID"] == agent["status"]["sandboxID"]
        assert e2b_requests(e2b, CREATES) == creates, "a sandbox was recreated"
        assert e2b_requests(e2b, KILLS) == kills, "a sandbox was killed"
        for operator in operators.values():
            assert "killing orphaned sandbox" not in operator.log()
    finally:
        for served in namespaces:
            kubectl.run("delete", "remoteagents", "--all", "-n", served, "--wait=false", check=False)
        try:
            eventually(lambda: all(not kubectl.items("remoteagents", served) for served in namespaces), 120,
                       what="both namespaces' agents to be finalized by their operators")
        finally:
            for operator in operators.values():
                operator.stop()
            kubectl.run("delete", "namespace", namespaces[1], "--wait=false", check=False)
