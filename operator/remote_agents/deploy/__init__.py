"""How the operator is deployed: the Kubernetes objects (RBAC, Deployment, Services) as plain dicts.
One source for both install paths: `manifests/base/` is rendered from here (`manifests.py`) and the
Pulumi program in `infra/` creates the same dicts as resources."""
