"""A private repository: the token from a Secret is used for ls-remote and the in-sandbox clone,
and is written nowhere: not in the sandbox's files or git config, not in status, Events or logs."""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.e2e.test_remote_agent import agent_manifest, wait_ready
from tests.support.git_http import PrivateGitServer

TOKEN = "ghp_private_9d8c7b6a5f4e3d2c"


def test_private_repo_is_cloned_with_a_token_that_is_never_written(kubectl, namespace, operator, e2b_client,
                                                                   git_server, tmp_path):
    source = git_server.create("private-source", {"agent.txt": "secret sauce\n"})
    root = tmp_path / "private"
    root.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(source.work), str(root / "agent.git")], check=True)
    server = PrivateGitServer(root, TOKEN)
    try:
        url = f"{server.url}/agent.git"
        kubectl.run("create", "secret", "generic", "repo-token", "-n", namespace, f"--from-literal=token={TOKEN}")
        kubectl.apply(agent_manifest("private", namespace, url, source={
            "repo": url, "ref": "main", "credentialsSecretRef": {"name": "repo-token", "key": "token"}}))
        agent = wait_ready(kubectl, "private", namespace)
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
        shutil.rmtree(root, ignore_errors=True)
