"""Two operators with leader election on one cluster: one acts, the other stands by and does
nothing until it holds the Lease; a SIGKILLed leader is replaced once its Lease expires, a
stopped one hands over at once (it releases the Lease), a leader cut off from the API server
stops before anyone else may lead, and no agent ever gets two sandboxes."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from remote_agents.api.names import LEADER_LEASE
from remote_agents_local import processes
from tests.e2e.conftest import FAST_OPERATOR_ARGS, start_e2b
from tests.e2e.test_agent_pool import members, pool_manifest, wait_pool_ready
from tests.e2e.test_agent_task import finished, task_manifest
from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.e2b_client import E2BClient
from tests.support.kubectl import eventually
from tests.support.operator_process import OperatorProcess, stop_after_finalizing
from tests.support.tcp_proxy import TcpProxy

LEASE_NAMESPACE = "leader-election"
RENEW_DEADLINE = 6
# A long Lease against a short renew deadline: a takeover well before the Lease could expire
# proves the old leader released it; a SIGKILLed leader is replaced only after it expires.
LEASE_SECONDS = 20
ELECTION_ARGS = ("--leader-election", "--lease-namespace", LEASE_NAMESPACE, "--lease-duration", str(LEASE_SECONDS),
                 "--renew-deadline", str(RENEW_DEADLINE), "--retry-period", "1")


def fetch(process: OperatorProcess, path: str) -> tuple[int, str] | None:
    """(status, body) of the process's metrics endpoint; None while nothing answers."""
    try:
        with urllib.request.urlopen(process.metrics_url + path, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return None


def role(process: OperatorProcess) -> str | None:
    answer = fetch(process, "/leader")
    return answer[1] if answer else None


def metric_total(process: OperatorProcess, name: str) -> float:
    """The sum of a metric's samples over all its labels."""
    status, text = fetch(process, "/metrics")
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def assert_stands_by(process: OperatorProcess) -> None:
    """A standby answers its probes, says what it is, and has reconciled, called E2B and written nothing."""
    assert fetch(process, "/healthz") == (200, "ok: standby")
    assert fetch(process, "/readyz") == (200, "ok: standby")
    assert metric_total(process, "remote_agents_leader") == 0
    assert metric_total(process, "remote_agents_reconcile_duration_seconds_count") == 0
    assert metric_total(process, "remote_agents_e2b_calls_total") == 0


def leader_and_standby(pair: list[OperatorProcess]) -> tuple[OperatorProcess, OperatorProcess]:
    def roles():
        found = {role(process): process for process in pair}
        return found if set(found) == {"leader", "standby"} else None
    found = eventually(roles, LEASE_SECONDS + 30, what="one leader and one standby")
    return found["leader"], found["standby"]


def lease_holder(kubectl) -> str | None:
    return kubectl.get("lease", LEADER_LEASE, LEASE_NAMESPACE)["spec"].get("holderIdentity")


@pytest.fixture(scope="module")
def e2b(tmp_path_factory):
    """Slow creates, so that a leader is killed while creates are in flight."""
    server = start_e2b(tmp_path_factory, "--latency", "create=1")
    yield server
    server.stop()


def through_proxy(kubeconfig: str, target: Path) -> tuple[str, TcpProxy]:
    """A copy of the kubeconfig whose API server is reached through a proxy that can be cut."""
    config = yaml.safe_load(Path(kubeconfig).read_text())
    server = urllib.parse.urlsplit(config["clusters"][0]["cluster"]["server"])
    proxy = TcpProxy((server.hostname, server.port))
    config["clusters"][0]["cluster"]["server"] = f"https://{server.hostname}:{proxy.port}"
    target.write_text(yaml.safe_dump(config))
    return str(target), proxy


@pytest.fixture(scope="module")
def pair(cluster, crds, kubectl, e2b, tmp_path_factory):
    kubectl.run("create", "namespace", LEASE_NAMESPACE, check=False)
    state = tmp_path_factory.mktemp("leader-election")
    proxied, proxy = through_proxy(cluster.kubeconfig, state / "kubeconfig-a")
    candidates = []
    for name in ("a", "b"):
        port = processes.free_port()
        process = OperatorProcess(proxied if name == "a" else cluster.kubeconfig, e2b.env,
                                  state / f"operator-{name}.log",
                                  *FAST_OPERATOR_ARGS, *ELECTION_ARGS, "--metrics-port", str(port))
        process.proxy = proxy if name == "a" else None
        process.metrics_url = f"http://127.0.0.1:{port}"
        candidates.append(process.start())
        if name == "a":  # a leads first, so that the test knows b has been a standby all along
            eventually(lambda: role(process) == "leader", 60, what="the first operator to lead")
    yield candidates
    leader, standby = leader_and_standby(candidates)
    standby.stop()
    stop_after_finalizing(leader, kubectl)


def test_sigkilled_leader_is_replaced_after_its_lease_and_no_agent_gets_two_sandboxes(kubectl, namespace, pair,
                                                                                     e2b, agent_repo):
    leader, standby = leader_and_standby(pair)
    assert_stands_by(standby)

    kubectl.apply(pool_manifest("crew", namespace, agent_repo.url, 12))

    def some_created():
        created = [a for a in members(kubectl, namespace, "crew") if (a.get("status") or {}).get("sandboxID")]
        return 3 <= len(created) < 12
    eventually(some_created, 120, interval=0.2, what="a few of the pool's sandboxes created, not all")
    assert_stands_by(standby)  # everything so far was the leader's work
    leader.kill()

    eventually(lambda: role(standby) == "leader", LEASE_SECONDS + 15, interval=0.2,
               what="the standby to lead once the killed leader's Lease expired")
    pool = wait_pool_ready(kubectl, "crew", namespace, timeout=240)
    assert pool["status"]["readyReplicas"] == 12
    client = E2BClient(e2b.env)
    for agent in members(kubectl, namespace, "crew"):
        assert [s.sandbox_id for s in client.by_uid(agent["metadata"]["uid"])] == [agent["status"]["sandboxID"]]

    leader.start()  # back as a standby: the Lease is held
    eventually(lambda: role(leader) == "standby", 60, what="the restarted operator to stand by")
    assert_stands_by(leader)


# Each run leaves one line per start in its own file: a task started twice would show two.
COUNTED_RUN = "echo started >> \"$RUN_FILES.starts\"; sleep 8; echo done"


def test_tasks_running_when_the_leader_is_killed_finish_once_under_the_new_leader(kubectl, namespace, pair, e2b,
                                                                                   agent_repo):
    leader, standby = leader_and_standby(pair)
    kubectl.apply(pool_manifest("runners", namespace, agent_repo.url, 5, query={"command": COUNTED_RUN}))
    wait_pool_ready(kubectl, "runners", namespace)
    names = [f"run-{i}" for i in range(5)]
    for name in names:
        kubectl.apply(task_manifest(name, namespace, name, pool="runners"))
    eventually(lambda: all((kubectl.get("agenttask", name, namespace).get("status") or {}).get("phase") == "Running"
                           for name in names), 60, interval=0.2, what="all five tasks running")
    leader.kill()

    eventually(lambda: role(standby) == "leader", LEASE_SECONDS + 15, interval=0.2, what="the standby to lead")
    client = E2BClient(e2b.env)
    sandboxes = {agent["metadata"]["name"]: agent["status"]["sandboxID"]
                 for agent in members(kubectl, namespace, "runners")}
    for name in names:
        task = finished(kubectl, name, namespace, timeout=120)
        assert task["status"]["phase"] == "Succeeded", task["status"]
        run_files = f"/home/user/.remote-agents/tasks/{task['metadata']['uid']}"
        assert client.read(sandboxes[task["status"]["agent"]], f"{run_files}.starts") == "started\n", name

    leader.start()
    eventually(lambda: role(leader) == "standby", 60, what="the restarted operator to stand by")


def test_graceful_stop_hands_over_before_the_lease_could_expire(kubectl, namespace, pair, agent_repo):
    leader, standby = leader_and_standby(pair)
    held_by = lease_holder(kubectl)
    leader.stop()
    assert leader.process.returncode == 0
    # Well under LEASE_SECONDS: only a released Lease is taken this soon.
    eventually(lambda: role(standby) == "leader", LEASE_SECONDS / 2, interval=0.1, what="the standby to lead")
    assert lease_holder(kubectl) not in (None, held_by)

    kubectl.apply(agent_manifest("after-handover", namespace, agent_repo.url))
    wait_ready(kubectl, "after-handover", namespace)

    leader.start()
    eventually(lambda: role(leader) == "standby", 60, what="the restarted operator to stand by")


def test_a_leader_cut_off_from_the_api_server_stops_before_anyone_may_take_over(kubectl, pair):
    a, b = pair
    if role(a) != "leader":  # a reaches the API server through the proxy: make it the leader
        b.stop()
        eventually(lambda: role(a) == "leader", LEASE_SECONDS / 2, what="a to lead")
        b.start()
        eventually(lambda: role(b) == "standby", 60, what="b to stand by")

    a.proxy.cut()
    cut_at = time.monotonic()
    eventually(lambda: a.process.poll() is not None, RENEW_DEADLINE + 20, interval=0.1,
               what="the cut-off leader to exit")
    exited_after = time.monotonic() - cut_at
    assert a.process.returncode == 3  # LOST_LEASE_EXIT: it stopped, nobody stopped it
    assert "lost the leader Lease" in a.log()
    # b may lead only once the Lease expired, a full Lease after the last renewal it saw: a was gone before.
    assert role(b) == "standby", f"b led before the Lease could expire ({exited_after:.1f} s after the cut)"
    eventually(lambda: role(b) == "leader", LEASE_SECONDS + 15, interval=0.2, what="b to lead")

    a.proxy.restore()
    a.start()
    eventually(lambda: role(a) == "standby", 60, what="a, back, to stand by")
