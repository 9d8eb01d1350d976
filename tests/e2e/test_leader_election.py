"""Two operators with leader election on one cluster: one acts, the other stands by and does
nothing until it holds the Lease; a SIGKILLed leader is replaced once its Lease expires (during a
pool's scale of 0 -> 20 with 10 tasks queued: one sandbox per agent, every task run once), a stopped
one hands over at once (it releases the Lease), a leader cut off from the API server stops before
anyone else may lead, and a stopped API server stops the leader; both recover when it returns."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from remote_agents.api.names import LEADER_LEASE
from remote_agents_local import processes
from remote_agents_local.cluster import control_plane
from tests.e2e.conftest import FAST_OPERATOR_ARGS, start_e2b
from tests.e2e.test_agent_pool import members, pool_manifest, pool_sandboxes, wait_pool_ready
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


def e2b_writes(e2b) -> int:
    """Requests e2b-local has served so far that could change a sandbox: everything but reads,
    control-plane and envd alike (its log has one `METHOD path ... -> status` line per request)."""
    pattern = re.compile(r"\b(POST|PUT|PATCH|DELETE) /\S*( sandbox=\S+)? ->")
    return sum(1 for line in e2b.log_path.read_text(errors="replace").splitlines() if pattern.search(line))


def assert_one_sandbox_per_agent(kubectl, namespace: str, pool: str, replicas: int, client: E2BClient) -> None:
    agents = members(kubectl, namespace, pool)
    assert len(agents) == replicas
    for agent in agents:
        assert [s.sandbox_id for s in client.by_uid(agent["metadata"]["uid"])] == [agent["status"]["sandboxID"]]
    assert len(pool_sandboxes(client, namespace, pool)) == replicas  # none lost, none extra


def assert_ran_once(kubectl, namespace: str, names: list[str], client: E2BClient, timeout: float) -> None:
    """Every task Succeeded after exactly one attempt, and its run started once in its agent's sandbox."""
    for name in names:
        task = finished(kubectl, name, namespace, timeout=timeout)
        assert task["status"]["phase"] == "Succeeded", task["status"]
        assert task["status"].get("attempts") == 1, task["status"]
        sandbox = kubectl.get("ra", task["status"]["agent"], namespace)["status"]["sandboxID"]
        run_files = f"/home/user/.remote-agents/tasks/{task['metadata']['uid']}"
        assert client.read(sandbox, f"{run_files}.starts") == "started\n", name


# Each run leaves one line per start in its own file: a task started twice would show two.
COUNTED_RUN = "echo started >> \"$RUN_FILES.starts\"; sleep 8; echo done"


POOL_SIZE = 20  # the numbers: a scale of 0 -> 20 with 10 tasks queued on the pool
QUEUED_TASKS = 10


def test_sigkilled_leader_is_replaced_after_its_lease_and_no_agent_gets_two_sandboxes(kubectl, namespace, pair,
                                                                                     e2b, agent_repo):
    leader, standby = leader_and_standby(pair)
    assert_stands_by(standby)

    kubectl.apply(pool_manifest("crew", namespace, agent_repo.url, 0, query={"command": COUNTED_RUN}))
    names = [f"queued-{i}" for i in range(QUEUED_TASKS)]
    for name in names:
        kubectl.apply(task_manifest(name, namespace, name, pool="crew", timeout=600))
    eventually(lambda: all((kubectl.get("agenttask", name, namespace).get("status") or {}).get("phase") == "Pending"
                           for name in names), 60, what="the tasks queued on the empty pool")
    kubectl.run("scale", "agentpool/crew", "-n", namespace, f"--replicas={POOL_SIZE}")

    def some_created():
        created = [a for a in members(kubectl, namespace, "crew") if (a.get("status") or {}).get("sandboxID")]
        return 3 <= len(created) < POOL_SIZE
    eventually(some_created, 120, interval=0.2, what="a few of the pool's sandboxes created, not all")
    assert_stands_by(standby)  # everything so far was the leader's work
    leader.kill()

    eventually(lambda: role(standby) == "leader", LEASE_SECONDS + 15, interval=0.2,
               what="the standby to lead once the killed leader's Lease expired")
    pool = wait_pool_ready(kubectl, "crew", namespace, timeout=420)
    assert pool["status"]["readyReplicas"] == POOL_SIZE
    client = E2BClient(e2b.env)
    assert_one_sandbox_per_agent(kubectl, namespace, "crew", POOL_SIZE, client)
    assert_ran_once(kubectl, namespace, names, client, timeout=300)

    leader.start()  # back as a standby: the Lease is held
    eventually(lambda: role(leader) == "standby", 60, what="the restarted operator to stand by")
    assert_stands_by(leader)


def test_tasks_running_when_the_leader_is_killed_finish_once_under_the_new_leader(kubectl, namespace, pair, e2b,
                                                                                   agent_repo):
    leader, standby = leader_and_standby(pair)
    kubectl.apply(pool_manifest("runners", namespace, agent_repo.url, QUEUED_TASKS, query={"command": COUNTED_RUN}))
    wait_pool_ready(kubectl, "runners", namespace, timeout=300)
    names = [f"run-{i}" for i in range(QUEUED_TASKS)]
    for name in names:
        kubectl.apply(task_manifest(name, namespace, name, pool="runners"))
    eventually(lambda: all((kubectl.get("agenttask", name, namespace).get("status") or {}).get("phase") == "Running"
                           for name in names), 120, interval=0.2, what="all the tasks running")
    leader.kill()

    eventually(lambda: role(standby) == "leader", LEASE_SECONDS + 15, interval=0.2, what="the standby to lead")
    assert_ran_once(kubectl, namespace, names, E2BClient(e2b.env), timeout=180)

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


def test_a_stopped_api_server_makes_the_leader_stop_acting_and_both_recover_when_it_returns(cluster, kubectl,
                                                                                           namespace, pair, e2b,
                                                                                           agent_repo):
    leader, standby = leader_and_standby(pair)
    kubectl.apply(pool_manifest("steady", namespace, agent_repo.url, 4))
    wait_pool_ready(kubectl, "steady", namespace)
    client = E2BClient(e2b.env)
    sandboxes_before = {s.sandbox_id for s in pool_sandboxes(client, namespace, "steady")}

    # Stopped, not cut: the same etcd data and the same port come back below.
    processes.terminate(cluster.pids["kube-apiserver"], 10)
    eventually(lambda: leader.process.poll() is not None, RENEW_DEADLINE + 30, interval=0.1,
               what="the leader to stop once it could not renew within the renew deadline")
    assert leader.process.returncode == 3, leader.log()[-3000:]  # LOST_LEASE_EXIT: it stopped itself
    assert "lost the leader Lease" in leader.log()
    writes_after_exit = e2b_writes(e2b)
    assert standby.process.poll() is None, "the standby died while the API server was away"
    assert role(standby) == "standby"  # it cannot take a Lease it cannot read
    assert_stands_by(standby)

    restarted = control_plane.up(Path(cluster.state_dir))
    assert restarted.api_port == cluster.api_port
    cluster.pids.update(restarted.pids)
    # Nothing acted on E2B while no one could hold the Lease: not the stopped leader, not the standby.
    assert e2b_writes(e2b) == writes_after_exit
    leader.start()  # what its pod's restart would do

    new_leader, new_standby = leader_and_standby(pair)
    assert lease_holder(kubectl) is not None and metric_total(new_leader, "remote_agents_leader") == 1
    for process in pair:
        assert fetch(process, "/healthz") == (200, f"ok: {role(process)}")
    assert_stands_by(new_standby)
    wait_pool_ready(kubectl, "steady", namespace)
    assert_one_sandbox_per_agent(kubectl, namespace, "steady", 4, client)
    assert {s.sandbox_id for s in pool_sandboxes(client, namespace, "steady")} == sandboxes_before  # none replaced
    kubectl.apply(agent_manifest("after-outage", namespace, agent_repo.url))
    wait_ready(kubectl, "after-outage", namespace)  # the new leader acts
