"""Argo CD health checks for the three kinds, derived from their kstatus conditions.

Argo CD runs a health check as a Lua 5.1 chunk with the object in the global `obj`; the chunk
returns a table `hs` with `status` (Healthy, Progressing, Degraded, Suspended) and `message`. The
checks ship as a kustomize Component patching `argocd-cm` (`resource.customizations.health.
<group>_<kind>`), rendered into `manifests/base/argocd/` with the rest of the base."""

from __future__ import annotations

from typing import Any

from remote_agents.api import names

ARGOCD_NAMESPACE = "argocd"
ARGOCD_CONFIG_MAP = "argocd-cm"
COMPONENT_DIR = "argocd"

# Helpers every check starts with. A condition computed for an older generation says nothing
# about the current spec, so it counts as not observed yet.
_PRELUDE = """\
local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function observed(c)
  local generation = obj.metadata.generation or 0
  return c ~= nil and (c.observedGeneration or 0) >= generation
end

local function explain(c)
  if c == nil then
    return ""
  end
  if c.message ~= nil and c.message ~= "" then
    return (c.reason or "") .. ": " .. c.message
  end
  return c.reason or ""
end

hs = {}
"""

# RemoteAgent and AgentPool: Stalled wins, then work in progress, then a pause the user asked
# for, then Ready. A False Ready with nothing in progress or stuck is a failure to report.
_RECONCILED_KIND = _PRELUDE + """\
local ready = condition("Ready")
local stalled = condition("Stalled")
local reconciling = condition("Reconciling")
if not observed(ready) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(obj.metadata.generation or 0)
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = explain(stalled)
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = explain(reconciling)
elseif ready.status == "True" and obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = explain(ready)
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = explain(ready)
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = explain(ready)
else
  hs.status = "Progressing"
  hs.message = explain(ready)
end
return hs
"""

# AgentTask: its phase is the outcome; the Ready condition says why it waits or how it ended.
_TASK = _PRELUDE + """\
local phase = "Pending"
if obj.status ~= nil and obj.status.phase ~= nil then
  phase = obj.status.phase
end
local why = explain(condition("Ready"))
if why == "" then
  why = phase
end
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = why
return hs
"""

SCRIPTS = {"RemoteAgent": _RECONCILED_KIND, "AgentPool": _RECONCILED_KIND, "AgentTask": _TASK}


def health_key(kind: str) -> str:
    return f"resource.customizations.health.{names.GROUP}_{kind}"


def config_map_patch() -> dict[str, Any]:
    """A strategic-merge patch of Argo CD's argocd-cm adding the health checks."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ARGOCD_CONFIG_MAP, "namespace": ARGOCD_NAMESPACE},
            "data": {health_key(kind): script for kind, script in SCRIPTS.items()}}


def component() -> dict[str, Any]:
    """The kustomize Component an Argo CD installation's kustomization lists under `components`."""
    return {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
            "patches": [{"path": "argocd-cm.yaml"}]}
