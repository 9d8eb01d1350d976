"""Names shared by the kustomize base, the Pulumi program and the docs."""

NAMESPACE = "remote-agents"
SERVICE_ACCOUNT = "remote-agents-operator"
CLUSTER_ROLE = "remote-agents-operator"
DEPLOYMENT = "remote-agents-operator"
WEBHOOK_SERVICE = "remote-agents-webhook"
METRICS_SERVICE = "remote-agents-metrics"
IMAGE = "ghcr.io/remote-agents/operator:0.1.0"

E2B_SECRET = "remote-agents-e2b"
E2B_SECRET_KEY = "apiKey"
WEBHOOK_SECRET = "remote-agents-webhook"
WEBHOOK_SECRET_KEY = "secret"
# The Secret the samples' agents read their LLM and data keys from (in the agents' namespace).
AGENT_KEYS_SECRET = "agent-keys"

WEBHOOK_PORT = 8443
METRICS_PORT = 9090

LABELS = {"app.kubernetes.io/name": "remote-agents", "app.kubernetes.io/component": "operator"}
