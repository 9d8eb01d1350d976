"""What the examples share: a client for the `remote-agents up` demo namespace whose defaults for
new agents are those of the sample agent `up` deploys (its git repository, setup and query command)."""

from __future__ import annotations

from remote_agents import RemoteAgentOrchestrator

NAMESPACE = "remote-agents-demo"
SAMPLE_AGENT = "sample-agent"


def orchestrator() -> RemoteAgentOrchestrator:
    """Kubeconfig from KUBECONFIG (the last line `remote-agents up` prints)."""
    sample = RemoteAgentOrchestrator(namespace=NAMESPACE).get_agent(SAMPLE_AGENT)["spec"]
    return RemoteAgentOrchestrator(namespace=NAMESPACE, repo=sample["source"]["repo"], ref=sample["source"]["ref"],
                                   setup=sample.get("setup", []), query_command=sample["query"]["command"])
