"""remote-agents: a Kubernetes operator that runs AI research agents in E2B sandboxes."""

__version__ = "0.1.0"

# The client pulls in the kubernetes package; import it only when asked for, so that
# `import remote_agents` (and every CLI command) stays cheap.
_CLIENT_NAMES = ("RemoteAgentOrchestrator", "OrchestratorError", "WaitTimeout", "TaskTimeout")


def __getattr__(name: str):
    if name in _CLIENT_NAMES:
        from remote_agents import client

        return getattr(client, name)
    raise AttributeError(f"module 'remote_agents' has no attribute {name!r}")
