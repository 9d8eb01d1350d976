"""RemoteAgentOrchestrator: the seed project's orchestrator API on top of the Kubernetes objects.

Every call creates, patches or reads RemoteAgent, AgentPool and AgentTask objects through the
Kubernetes API; the operator does the work. Nothing here talks to E2B but `follow_task`, which reads a
run's output from its sandbox (live_output.py). Every wait is bounded:
objects are polled, tasks are watched (so progress sees every phase change).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import uuid

import urllib3
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from remote_agents.api.names import (
    AGENTS, API_VERSION, GROUP, POOL_LABEL, POOLS, RECONCILE_REQUEST_ANNOTATION, TASKS, VERSION,
)
from remote_agents.api.conditions import condition, is_current
from remote_agents.api.timestamps import epoch, now_rfc3339
from remote_agents.controller.redaction import Redactor

# Appended by the operator when status.output is cut short; the ConfigMap then holds the rest.
TRUNCATED = re.compile(r"\n\[\.\.\. truncated, \d+ bytes in total\]\Z")
POLL_SECONDS = 0.5
FINISHED = ("Succeeded", "Failed")
DISPATCH_GRACE_SECONDS = 60  # beyond a task's own deadline: waiting for an agent and collecting output


class OrchestratorError(RuntimeError):
    """Something the caller asked for cannot happen (stalled agent, missing object, API error)."""


class WaitTimeout(OrchestratorError):
    """An object did not reach the awaited state in time."""


class TaskTimeout(WaitTimeout):
    """An AgentTask did not finish in time (it keeps its own deadline in the cluster)."""


class LiveOutputUnavailable(OrchestratorError):
    """A run's output cannot be read from its sandbox by this caller (no E2B key, Secrets it cannot read)."""


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return epoch(end) - epoch(start)


IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def kube_target(kubeconfig: str | None = None, context: str | None = None) -> tuple[k8s.ApiClient, str]:
    """An API client for the kubeconfig's context (the current one unless `context` is given), or
    the pod's service account in a cluster, and the namespace that context or pod defaults to,
    as kubectl would pick them."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if not path and not context and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        try:
            with open(IN_CLUSTER_NAMESPACE_FILE) as file:
                namespace = file.read().strip()
        except OSError:
            namespace = "default"
        return k8s.ApiClient(configuration), namespace
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=path)
    except k8s_config.ConfigException as error:
        raise OrchestratorError(f"no usable kubeconfig: {error}") from None
    chosen = current if context is None else next((c for c in contexts if c["name"] == context), None)
    if chosen is None:
        raise OrchestratorError(f"context {context!r} is not in the kubeconfig "
                                f"(it has {', '.join(c['name'] for c in contexts)})")
    namespace = (chosen.get("context") or {}).get("namespace") or "default"
    return k8s_config.new_client_from_config(config_file=path, context=chosen["name"]), namespace


def _env_list(env: dict[str, str] | None) -> list[dict[str, str]]:
    return [{"name": key, "value": str(value)} for key, value in (env or {}).items()]


class RemoteAgentOrchestrator:
    def __init__(self, namespace: str | None = None, kubeconfig: str | None = None, *, context: str | None = None,
                 repo: str | None = None, ref: str = "main", setup: list[str] | None = None, query_command: str | None = None,
                 template: str = "base", env: dict[str, str] | None = None,
                 task_grace_seconds: float = DISPATCH_GRACE_SECONDS):
        api_client, context_namespace = kube_target(kubeconfig, context)
        self.namespace = namespace or context_namespace
        self.task_grace_seconds = task_grace_seconds
        self.defaults = {"repo": repo, "ref": ref, "setup": setup or [], "query_command": query_command,
                         "template": template, "env": env or {}}
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)

    # ---- agents -----------------------------------------------------------------------------
    def launch_agent(self, name: str | None = None, repo: str | None = None, ref: str | None = None,
                     setup: list[str] | None = None, query_command: str | None = None,
                     env: dict[str, str] | None = None, template: str | None = None, wait: bool = True,
                     timeout: float = 300) -> str:
        name = name or f"agent-{uuid.uuid4().hex[:8]}"
        self._create(AGENTS, "RemoteAgent", {"name": name},
                     self._agent_spec(repo, ref, setup, query_command, env, template))
        if wait:
            self._wait(AGENTS, name, lambda a: is_current(a, "Ready"), timeout, "to be Ready")
        return name

    def pause_agent(self, agent_id: str, timeout: float = 120) -> None:
        self._set_paused(agent_id, True, timeout)

    def resume_agent(self, agent_id: str, timeout: float = 120) -> None:
        self._set_paused(agent_id, False, timeout)

    def terminate_agent(self, agent_id: str, timeout: float = 120) -> None:
        self._delete(AGENTS, agent_id, timeout)

    def update_agent_code(self, agent_id: str, ref: str | None = None, timeout: float = 300) -> str:
        """Move the agent to `ref` (or re-check its current ref for new commits); returns the commit."""
        agent = self._get(AGENTS, agent_id)
        source = agent["spec"]["source"]
        if ref is not None:
            patch: dict[str, Any] = {"spec": {"source": {"ref": ref}}}
        else:
            patch = {"metadata": {"annotations": {
                RECONCILE_REQUEST_ANNOTATION: now_rfc3339()}}}
        commit = self._resolve(source, ref or source.get("ref", "main"))
        self._call(self.custom.patch_namespaced_custom_object, GROUP, VERSION, self.namespace, AGENTS, agent_id,
                   patch)
        self._wait(AGENTS, agent_id, lambda a: (a.get("status") or {}).get("revision") == commit
                   and is_current(a, "Ready"), timeout, f"to run commit {commit[:12]}")
        return commit

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        """The RemoteAgent object as the API returns it (spec and status)."""
        return self._get(AGENTS, agent_id)

    def list_agents(self) -> list[dict[str, Any]]:
        items = self.list_objects(AGENTS)
        return [self._summary(agent) for agent in sorted(items, key=lambda a: a["metadata"]["name"])]

    def health_check(self, agent_id: str) -> dict[str, Any]:
        agent = self._get(AGENTS, agent_id)
        return {**self._summary(agent), "message": (agent.get("status") or {}).get("message"),
                "conditions": {c["type"]: {"status": c.get("status"), "reason": c.get("reason", ""),
                                           "message": c.get("message", "")}
                               for c in (agent.get("status") or {}).get("conditions") or []}}

    # ---- pools ------------------------------------------------------------------------------
    def create_agent_pool(self, size: int, name: str | None = None, repo: str | None = None, ref: str | None = None,
                          setup: list[str] | None = None, query_command: str | None = None,
                          env: dict[str, str] | None = None, template: str | None = None, wait: bool = True,
                          timeout: float = 300) -> str:
        name = name or f"pool-{uuid.uuid4().hex[:8]}"
        self._create(POOLS, "AgentPool", {"name": name}, {
            "replicas": size, "template": {"spec": self._agent_spec(repo, ref, setup, query_command, env, template)}})
        if wait:
            self._wait(POOLS, name, lambda p: is_current(p, "Ready") and (p.get("status") or {}).get("readyReplicas")
                       == size, timeout, f"to have {size} Ready agents")
        return name

    def delete_pool(self, pool: str, timeout: float = 120) -> None:
        """Foreground deletion: the pool is gone only once its agents (and their sandboxes) are."""
        self._delete(POOLS, pool, timeout, propagation="Foreground")

    # ---- tasks ------------------------------------------------------------------------------
    def query_agent(self, agent_id: str, query: str, timeout: float = 900,
                    on_progress: Callable[[dict[str, Any]], None] | None = None, priority: int = 0,
                    retries: int = 0) -> dict[str, Any]:
        task = self.submit_task(query, agent=agent_id, timeout=timeout, priority=priority, retries=retries)
        return self.wait_tasks([task], timeout, on_progress)[0]

    def query_pool(self, pool: str, queries: list[str], timeout: float = 900, priority: int = 0,
                   retries: int = 0) -> list[dict[str, Any]]:
        """One AgentTask per query, all at once; the operator spreads them over the pool's agents."""
        tasks = [self.submit_task(query, pool=pool, timeout=timeout, priority=priority, retries=retries)
                 for query in queries]
        return self.wait_tasks(tasks, timeout)

    def submit_task(self, query: str, agent: str | None = None, pool: str | None = None,
                    timeout: float = 900, session: str | None = None, turn: int | None = None,
                    priority: int = 0, retries: int = 0) -> str:
        """`session`: the conversation it belongs to; `turn` numbers it in the task's name, which
        orders a session's tasks created within the same second (the FIFO's tie-break).
        `priority`: higher runs first on a busy agent or pool; `retries`: new attempts after a
        lost sandbox or agent (never after the command's own failure)."""
        target = {"agentRef": {"name": agent}} if agent else {"poolRef": {"name": pool}}
        prefix = f"{session[:40]}-{turn:05d}-" if session and turn is not None else f"{(agent or pool)[:40]}-q-"
        created = self._create(TASKS, "AgentTask", {"generateName": prefix},
                               {"query": query, "timeoutSeconds": max(1, int(timeout)), **target,
                                "priority": priority, "retries": retries,
                                **({"session": session} if session else {})})
        return created["metadata"]["name"]

    def session(self, agent_or_pool: str, name: str | None = None) -> Session:
        """A conversation with an agent, or with whichever agent of a pool takes its first question:
        every `ask()` of it runs on that agent, after the previous one, where a resident agent
        remembers what was said before."""
        if self._get(AGENTS, agent_or_pool, missing_ok=True) is not None:
            target = {"agent": agent_or_pool}
        elif self._get(POOLS, agent_or_pool, missing_ok=True) is not None:
            target = {"pool": agent_or_pool}
        else:
            raise OrchestratorError(f"no RemoteAgent or AgentPool {agent_or_pool} in namespace {self.namespace}")
        return Session(self, target, name or f"s-{uuid.uuid4().hex[:12]}")

    def cancel_task(self, name: str, timeout: float = 60) -> None:
        """Cancel a task by deleting it; returns once it is gone and, when it was running, once the
        operator says its run is stopped in the sandbox (its Event TaskCancelled)."""
        task = self._get(TASKS, name)
        deadline = time.monotonic() + timeout
        self._delete(TASKS, name, timeout)
        if (task.get("status") or {}).get("phase") != "Running":
            return
        selector = f"involvedObject.uid={task['metadata']['uid']},reason=TaskCancelled"
        while not self._call(self.core.list_namespaced_event, self.namespace, field_selector=selector).items:
            if time.monotonic() > deadline:
                raise WaitTimeout(f"agenttasks/{name} was deleted, but its run was not reported stopped "
                                  f"within {timeout}s")
            time.sleep(POLL_SECONDS)

    def wait_tasks(self, names: list[str], timeout: float,
                   on_progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Results in the order of `names`; TaskTimeout when they are not all finished in time.
        Watches rather than polls, so `on_progress` sees every phase, even a run of a second."""
        deadline = time.monotonic() + timeout + self.task_grace_seconds
        pending, done = set(names), {}

        def see(task: dict[str, Any]) -> None:
            name = task["metadata"]["name"]
            if name not in pending:
                return
            if on_progress:
                on_progress(task)
            if (task.get("status") or {}).get("phase") in FINISHED:
                done[name] = self._result(task)
                pending.discard(name)

        while pending:
            # (Re)list, then watch from there; an expired or broken watch just comes back here.
            listing = self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, TASKS)
            listed = {task["metadata"]["name"] for task in listing["items"]}
            if pending - listed:
                raise OrchestratorError(f"tasks deleted before they finished: {', '.join(sorted(pending - listed))}")
            for task in listing["items"]:
                see(task)
            remaining = deadline - time.monotonic()
            if pending and remaining <= 0:
                raise TaskTimeout(f"not finished after {timeout + self.task_grace_seconds:g}s: "
                                  f"{', '.join(n for n in names if n in pending)}")
            if pending:
                self._watch_tasks(listing["metadata"]["resourceVersion"], remaining, see, pending)
        return [done[name] for name in names]

    def _watch_tasks(self, version: str, seconds: float, see: Callable[[dict[str, Any]], None],
                     pending: set[str]) -> None:
        stream = watch.Watch()
        try:
            for event in stream.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                       TASKS, resource_version=version, timeout_seconds=max(1, int(seconds))):
                if event["type"] == "DELETED":
                    return  # the relist reports it
                see(event["object"])
                if not pending:
                    return
        except (ApiException, urllib3.exceptions.HTTPError):
            time.sleep(POLL_SECONDS)
        finally:
            stream.stop()

    def get_task(self, name: str) -> dict[str, Any]:
        return self._get(TASKS, name)

    def follow_task(self, name: str, follow: bool = True,
                    on_progress: Callable[[dict[str, Any]], None] | None = None) -> Iterator[tuple[str, str]]:
        """The task's output as (stream, line), stream "stdout" or "stderr", from the first line of its
        run: read live from its agent's sandbox (with `follow`, waiting for the run to start and
        going on until it ends; without, what it has written so far). Needs the E2B key of the
        agent's account (its own key's Secret, else E2B_API_KEY) and read access to the agent's
        Secrets, whose values are redacted from the lines. Without them, or when the sandbox is
        paused or gone, it is the output the operator recorded at the end (waited for with
        `follow`), after a ("note", why) line. `on_progress` sees the task while it waits to start.
        The result (exit code) is `task_result(name)`."""
        from remote_agents import live_output  # the E2B SDK only for those who follow output

        task = self._get(TASKS, name)
        if follow:
            timeout = task["spec"].get("timeoutSeconds", 900) + self.task_grace_seconds
            def started(t: dict[str, Any]) -> bool:
                if on_progress:
                    on_progress(t)
                return bool(_ran(t)) or (t.get("status") or {}).get("phase") in FINISHED
            task = self._wait(TASKS, name, started, timeout, "to start")
        status = _ran(task)
        if not status:
            phase = (task.get("status") or {}).get("phase") or "Pending"
            yield live_output.NOTE, f"task {name} has no run to read ({phase})\n"
            return
        try:
            api_key, redact = self._live_access(task)
            yield from live_output.follow(status, api_key, redact, once=not follow)
            return
        except live_output.StreamLost as error:
            raise OrchestratorError(f"{error} (following again starts from the beginning)") from None
        except (LiveOutputUnavailable, live_output.SandboxAsleep) as why:
            yield live_output.NOTE, f"live output unavailable ({why}): the output recorded when the task ended\n"
        if follow:
            self.wait_tasks([name], task["spec"].get("timeoutSeconds", 900))
        yield from self._recorded_output(name)

    def task_result(self, name: str, timeout: float = 900) -> dict[str, Any]:
        """The task's result (as query_agent returns it) once it has finished."""
        return self.wait_tasks([name], timeout)[0]

    def _live_access(self, task: dict[str, Any]) -> tuple[str | None, Redactor]:
        """The E2B key of the task's sandbox and a redactor of every Secret value its run had, as
        the operator redacts them (controller/agents/inputs.py)."""
        agent = self._get(AGENTS, task["status"].get("agent") or "", missing_ok=True)
        if agent is None:
            raise LiveOutputUnavailable("its agent is gone")
        spec, redact = agent["spec"], Redactor()
        try:
            for variable in spec.get("env") or []:
                if ref := (variable.get("valueFrom") or {}).get("secretKeyRef"):
                    redact.add(self._secret_value(ref))
            if ref := (spec.get("source") or {}).get("credentialsSecretRef"):
                redact.add(self._secret_value(ref))
        except OrchestratorError as error:
            raise LiveOutputUnavailable(f"the agent's Secrets are needed to redact it: {error}") from None
        api_key = None
        if key_ref := spec.get("e2bApiKeySecretRef"):
            try:
                api_key = self._secret_value(key_ref)
            except OrchestratorError:
                pass  # not readable by this caller, whose own E2B_API_KEY may be of that account
        api_key = api_key or os.environ.get("E2B_API_KEY")
        if not api_key:
            raise LiveOutputUnavailable("no E2B API key: set E2B_API_KEY")
        redact.add(api_key)
        return api_key, redact

    def _recorded_output(self, name: str) -> Iterator[tuple[str, str]]:
        status = self._get(TASKS, name).get("status") or {}
        if status.get("phase") not in FINISHED:
            return
        config_map = self._call(self.core.read_namespaced_config_map, status["outputConfigMap"], self.namespace) \
            if status.get("outputConfigMap") else None
        data = (config_map.data if config_map else None) or {"stdout": status.get("output") or ""}
        for stream in ("stdout", "stderr"):
            yield from ((stream, line) for line in (data.get(stream) or "").splitlines(keepends=True))

    def _result(self, task: dict[str, Any]) -> dict[str, Any]:
        status = task["status"]
        output = status.get("output") or ""
        if TRUNCATED.search(output) and status.get("outputConfigMap"):
            config_map = self._call(self.core.read_namespaced_config_map, status["outputConfigMap"], self.namespace)
            output = (config_map.data or {}).get("stdout", output)
        result = {"task": task["metadata"]["name"], "success": status["phase"] == "Succeeded", "output": output,
                  "exit_code": status.get("exitCode"), "agent": status.get("agent"),
                  "duration_seconds": _seconds_between(status.get("startTime"), status.get("completionTime"))}
        if not result["success"]:
            failed = condition(task, "Failed")
            result.update(reason=failed.get("reason"), error=failed.get("message") or status.get("message"))
        return result

    def list_objects(self, plural: str, all_namespaces: bool = False) -> list[dict[str, Any]]:
        if all_namespaces:
            return self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, plural)["items"]
        return self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, plural)["items"]

    def watch_objects(self, plural: str, all_namespaces: bool = False) -> Iterator[dict[str, Any]]:
        """Watch events ({"type", "object"}): each object as it is now (ADDED), then every change;
        endless. An expired or broken watch lists again (and so repeats the objects as ADDED)."""
        if all_namespaces:
            lister, scope = self.custom.list_cluster_custom_object, (GROUP, VERSION, plural)
        else:
            lister, scope = self.custom.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, plural)
        while True:
            listing = self._call(lister, *scope)
            for obj in listing["items"]:
                yield {"type": "ADDED", "object": obj}
            stream = watch.Watch()
            try:
                for event in stream.stream(lister, *scope, resource_version=listing["metadata"]["resourceVersion"]):
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        yield event
            except (ApiException, urllib3.exceptions.HTTPError):
                time.sleep(POLL_SECONDS)
            finally:
                stream.stop()

    # ---- helpers ----------------------------------------------------------------------------
    def _agent_spec(self, repo: str | None, ref: str | None, setup: list[str] | None, query_command: str | None,
                    env: dict[str, str] | None, template: str | None) -> dict[str, Any]:
        repo = repo or self.defaults["repo"]
        if not repo:
            raise OrchestratorError("no repo given and no default repo set")
        spec: dict[str, Any] = {
            "template": template or self.defaults["template"],
            "source": {"repo": repo, "ref": ref or self.defaults["ref"]},
            "setup": list(setup if setup is not None else self.defaults["setup"]),
            "env": _env_list({**self.defaults["env"], **(env or {})})}
        command = query_command or self.defaults["query_command"]
        if command:
            spec["query"] = {"command": command}
        return spec

    def _summary(self, agent: dict[str, Any]) -> dict[str, Any]:
        status = agent.get("status") or {}
        return {"name": agent["metadata"]["name"], "phase": status.get("phase"), "ready": is_current(agent, "Ready"),
                "sandbox": status.get("sandboxID"), "revision": status.get("revision"),
                "pool": (agent["metadata"].get("labels") or {}).get(POOL_LABEL),
                "paused": bool(agent["spec"].get("paused"))}

    def _set_paused(self, name: str, paused: bool, timeout: float) -> None:
        self._call(self.custom.patch_namespaced_custom_object, GROUP, VERSION, self.namespace, AGENTS, name,
                   {"spec": {"paused": paused}})
        phase = "Paused" if paused else "Ready"
        self._wait(AGENTS, name, lambda a: (a.get("status") or {}).get("phase") == phase and is_current(a, "Ready"),
                   timeout, f"to be {phase}")

    def _resolve(self, source: dict[str, Any], ref: str) -> str:
        from remote_agents.controller.sources import git as git_source  # git only; no Kopf or E2B

        secret_ref = source.get("credentialsSecretRef")
        token = self._secret_value(secret_ref) if secret_ref else None
        try:
            return asyncio.run(git_source.resolve(source["repo"], ref, token))
        except (git_source.RefNotFound, git_source.GitUnavailable) as error:
            raise OrchestratorError(str(error)) from None

    def _secret_value(self, ref: dict[str, Any]) -> str | None:
        """A Secret key's value (None for a missing one marked optional, as the operator reads it)."""
        try:
            secret = self.core.read_namespaced_secret(ref["name"], self.namespace)
        except ApiException as error:
            if error.status == 404 and ref.get("optional"):
                return None
            raise OrchestratorError(f"reading Secret {ref['name']}: {error.status} {_api_message(error)}") from None
        value = (secret.data or {}).get(ref["key"])
        if value is None and not ref.get("optional"):
            raise OrchestratorError(f"Secret {ref['name']} has no key {ref['key']!r}")
        return base64.b64decode(value).decode() if value is not None else None

    def _create(self, plural: str, kind: str, metadata: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": API_VERSION, "kind": kind,
                "metadata": {**metadata, "namespace": self.namespace}, "spec": spec}
        return self._call(self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, plural, body)

    def _delete(self, plural: str, name: str, timeout: float, propagation: str = "Background") -> None:
        self._call(self.custom.delete_namespaced_custom_object, GROUP, VERSION, self.namespace, plural, name,
                   propagation_policy=propagation)
        deadline = time.monotonic() + timeout
        while self._get(plural, name, missing_ok=True) is not None:
            if time.monotonic() > deadline:
                raise WaitTimeout(f"{plural}/{name} still exists after {timeout}s (finalizer not done)")
            time.sleep(POLL_SECONDS)

    def _wait(self, plural: str, name: str, done: Callable[[dict[str, Any]], bool], timeout: float,
              what: str) -> dict[str, Any]:
        """Poll until `done`; a Stalled object will not get there by itself, so that fails at once."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self._get(plural, name)
            if done(obj):
                return obj
            if is_current(obj, "Stalled"):
                stalled = condition(obj, "Stalled")
                raise OrchestratorError(f"{plural}/{name} is stalled ({stalled.get('reason')}): "
                                        f"{stalled.get('message')}")
            if time.monotonic() > deadline:
                ready = condition(obj, "Ready")
                raise WaitTimeout(f"{plural}/{name} did not get {what} within {timeout}s; phase "
                                  f"{(obj.get('status') or {}).get('phase')}, Ready={ready.get('status')} "
                                  f"({ready.get('reason')}: {ready.get('message')})")
            time.sleep(POLL_SECONDS)

    def _get(self, plural: str, name: str, missing_ok: bool = False) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)
        except ApiException as error:
            if error.status == 404:
                if missing_ok:
                    return None
                raise OrchestratorError(f"{plural}/{name} not found in namespace {self.namespace}") from None
            raise OrchestratorError(f"reading {plural}/{name}: {error.status} {error.reason}") from None

    @staticmethod
    def _call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ApiException as error:
            raise OrchestratorError(f"{method.__name__} failed: {error.status} {_api_message(error)}") from None


class Session:
    """One conversation (AgentTask.spec.session); `history` holds its questions and answers."""

    def __init__(self, orchestrator: RemoteAgentOrchestrator, target: dict[str, str], name: str):
        self.orchestrator = orchestrator
        self.target = target
        self.name = name
        self.history: list[dict[str, Any]] = []

    @property
    def agent(self) -> str | None:
        """The agent holding the conversation (None before its first answer)."""
        return next((turn["agent"] for turn in reversed(self.history) if turn.get("agent")), None)

    def ask(self, query: str, timeout: float = 900,
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Ask the next question and wait for its result (as `query_agent` returns it)."""
        task = self.orchestrator.submit_task(query, timeout=timeout, session=self.name, turn=len(self.history),
                                             **self.target)
        result = self.orchestrator.wait_tasks([task], timeout, on_progress)[0]
        self.history.append({"query": query, **result})
        return result


def _ran(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's status once its run has a place in a sandbox (a runId and a sandboxID), else None."""
    status = task.get("status") or {}
    return status if status.get("runId") and status.get("sandboxID") else None


def _api_message(error: ApiException) -> str:
    try:
        return json.loads(error.body).get("message") or error.reason
    except (TypeError, ValueError):
        return str(error.reason)


__all__ = ["RemoteAgentOrchestrator", "Session", "OrchestratorError", "WaitTimeout", "TaskTimeout",
           "LiveOutputUnavailable"]
