"""remote-agents: a Kubernetes operator that runs AI research agents in E2B sandboxes."""

__version__ = "0.1.0"
