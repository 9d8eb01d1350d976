"""What the sandbox-safety tests look at: E2B requests in e2b-local's log, how many lists an
operator has made (so a test can wait until its orphan sweep has judged), conditions and Events,
and an installed schema loosened for a while (to store an object the operator's model rejects)."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.request
from collections.abc import Iterator

from tests.support.kubectl import Kubectl, eventually

CREATES = r"POST /(?:v2/)?sandboxes -> 201"
KILLS = r"DELETE /(?:v2/)?sandboxes/"
# E2B list calls (one a page) an operator makes before it counts as swept: with the suite's fast
# flags and one page a list, its fleet list comes every 2 s (--health-interval), so this is well
# past the 6 s --orphan-grace.
LISTS_PER_SWEEP = 12
LIST_CALLS = re.compile(r'^remote_agents_e2b_calls_total\{operation="list",outcome="ok"\} (\S+)$', re.M)
AGENT_CRD = "remoteagents.remoteagents.io"
MAX_TASKS = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/maxConcurrentTasks/maximum"


def e2b_requests(e2b, pattern: str) -> int:
    return len(re.findall(pattern, e2b.log_path.read_text(), re.M))


def lists_made(metrics_url: str) -> int:
    try:
        text = urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5).read().decode()
    except OSError:
        return 0  # not serving yet
    match = LIST_CALLS.search(text)
    return int(float(match.group(1))) if match else 0


def swept(operator, since: int = 0, lists: int = LISTS_PER_SWEEP) -> None:
    """Wait until the operator has made `lists` E2B list calls (pages) more than `since`."""
    eventually(lambda: lists_made(operator.metrics_url) >= since + lists, 300, what=f"{lists} more E2B lists")


def condition(kubectl: Kubectl, name: str, namespace: str, kind: str) -> dict | None:
    """The agent's condition `kind` when it is True."""
    conditions = ((kubectl.get("ra", name, namespace) or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind and c["status"] == "True"), None)


def events(kubectl: Kubectl, namespace: str, name: str) -> list[dict]:
    items = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [e for e in items if e["involvedObject"].get("name") == name]


@contextlib.contextmanager
def max_tasks_unbounded(kubectl: Kubectl) -> Iterator[None]:
    """The RemoteAgent schema without its maxConcurrentTasks maximum, as an older CRD might have
    been, until the block ends. The objects stored meanwhile keep what they were given."""
    def patch(operation: dict) -> None:
        kubectl.run("patch", "crd", AGENT_CRD, "--type=json", "-p", json.dumps([operation]))
    patch({"op": "remove", "path": MAX_TASKS})
    try:
        yield
    finally:
        patch({"op": "add", "path": MAX_TASKS, "value": 64})


def store_unchecked(kubectl: Kubectl, *kubectl_args: str) -> None:
    """Run a kubectl write once the loosened schema takes effect (the API server picks it up shortly)."""
    eventually(lambda: kubectl.run(*kubectl_args, check=False).returncode == 0, 30,
               what="the loosened schema to take effect")
