"""A private repository: the token from a Secret is used for ls-remote and the in-sandbox clone,
and is written nowhere: not in the sandbox's files or git config, not in status, Events or logs."""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.e2e.test_remote_agent import agent_manifest, revision_is, wait_ready
from tests.support.git_http import PrivateGitServer
from tests.support.kubectl import eventually

TOKEN = "ghp_private_9d8c7b6a5f4e3d2c"


def serve_privately(git_server, tmp_path, name: str, **server_options) -> PrivateGitServer:
    """The repository `name` at a PrivateGitServer (taking TOKEN unless `server_options` say otherwise)."""
    source = git_server.create(name, {"agent.txt": "secret sauce\n"})
    root = tmp_path / name
    root.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(source.work), str(root / "agent.git")], check=True)
    return PrivateGitServer(root, **(server_options or {"token": TOKEN}))


def apply_private_agent(kubectl, namespace: str, name: str, server: PrivateGitServer) -> dict:
    url = f"{server.url}/agent.git"
    kubectl.run("create", "secret", "generic", "repo-token", "-n", namespace, f"--from-literal=token={TOKEN}")
    kubectl.apply(agent_manifest(name, namespace, url, source={
        "repo": url, "ref": "main", "credentialsSecretRef": {"name": "repo-token", "key": "token"}}))
    return wait_ready(kubectl, name, namespace)


def test_private_repo_is_cloned_with_a_token_that_is_never_written(kubectl, namespace, operator, e2b_client,
                                                                   git_server, tmp_path):
    server = serve_privately(git_server, tmp_path, "private-source")
    try:
        agent = apply_private_agent(kubectl, namespace, "private", server)
        status = agent["status"]
        assert e2b_client.read(status["sandboxID"], f"{status['workdir']}/agent.txt") == "secret sauce\n"
        assert any(authorised for _, authorised in server.requests)

        sandbox = e2b_client.connect(status["sandboxID"])
        found = sandbox.commands.run(f"grep -r -l -F '{TOKEN}' /home/user || true").stdout
        assert found.strip() == "", f"token written in the sandbox: {found}"
        remote = sandbox.commands.run("git remote -v", cwd=status["workdir"]).stdout
        assert TOKEN not in remote and "x-access-token" not in remote
        events = kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout
        assert TOKEN not in json.dumps(agent) and TOKEN not in events and TOKEN not in operator.log()
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "private-source", ignore_errors=True)


def test_a_hanging_git_server_does_not_hold_back_other_agents(kubectl, namespace, operator, git_server, agent_repo,
                                                              tmp_path):
    """The ref check asks every repository at once: a server that accepts connections and never
    answers (ls-remote waits for the operator's git timeout, 120 s) delays only its own agents."""
    server = serve_privately(git_server, tmp_path, "hanging-source")
    try:
        apply_private_agent(kubectl, namespace, "stuck", server)
        server.hang()
        kubectl.apply(agent_manifest("lively", namespace, agent_repo.url))
        wait_ready(kubectl, "lively", namespace)
        pushed = agent_repo.commit({"agent.txt": "version 2\n"}, "v2")
        eventually(lambda: revision_is(kubectl, "lively", namespace, pushed), 60,
                   what="the agent on a healthy server to follow its branch")
    finally:
        server.stop()
