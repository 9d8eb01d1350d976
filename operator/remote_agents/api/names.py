"""Every name the API shares: the group and version, the kinds' plurals, the labels, annotations
and finalizer on our objects, and the metadata keys on E2B sandboxes. Spelled here once.

Changing any of them makes existing objects and sandboxes look foreign to a running operator
(Kopf would take every object for new, the orphan sweep every sandbox for someone else's).
"""

from __future__ import annotations

GROUP = "remoteagents.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

AGENTS = "remoteagents"
POOLS = "agentpools"
TASKS = "agenttasks"
TEMPLATES = "e2btemplates"

FINALIZER = f"{GROUP}/finalizer"
# On a Secret that agents use as their E2B key, while any does (like kubernetes.io/pvc-protection):
# deleting it, or its namespace, waits until their deletions have reached their sandboxes with it.
KEY_PROTECTION_FINALIZER = f"{GROUP}/e2b-key-protection"
# Put on AgentTasks by earlier builds of the operator while their run was live; no longer added (it
# cost two writes per task, see tasks/cancel.py), only taken off the tasks being deleted with it.
LEGACY_RUN_FINALIZER = f"{GROUP}/run"
POOL_LABEL = f"{GROUP}/pool"
TEMPLATE_HASH_LABEL = f"{GROUP}/template-hash"
# Outside Kopf's own "remoteagents.io/" prefix: Kopf ignores changes of annotations under its prefix.
RECONCILE_REQUEST_ANNOTATION = f"reconcile.{GROUP}/requested-at"
PUSHED_REVISION_ANNOTATION = f"reconcile.{GROUP}/pushed-revision"
# Sandboxes left running by deletionPolicy Orphan are recorded in ConfigMaps of this name and label.
ORPHANS_CONFIGMAP = "remote-agents-orphaned-sandboxes"
ORPHANS_LABEL = f"{GROUP}/orphaned-sandboxes"

# The coordination.k8s.io Lease the active operator replica holds (RBAC grants this name only).
LEADER_LEASE = "remote-agents-operator"

# E2B sandbox metadata: which object a sandbox belongs to (set at create; E2B cannot change it later).
SANDBOX_UID_KEY = f"{GROUP}/uid"
SANDBOX_CLUSTER_KEY = f"{GROUP}/cluster"
SANDBOX_NAMESPACE_KEY = f"{GROUP}/namespace"
SANDBOX_NAME_KEY = f"{GROUP}/name"
SANDBOX_CONFIG_KEY = f"{GROUP}/config-hash"
# The E2BTemplate content (status.readyContentHash) a sandbox was created from.
SANDBOX_TEMPLATE_KEY = f"{GROUP}/template-content"
