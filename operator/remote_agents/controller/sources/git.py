"""Git on the operator's side (resolving a ref to a commit, exporting a commit's files) and the
script that checks the code out inside a sandbox. A token for a private repository travels only in the environment of
the git process (GIT_CONFIG_* as an http.extraHeader), never in a URL, a config file or argv."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import shlex
import tarfile
import tempfile

SHA_PATTERN = re.compile(r"^[0-9a-f]{40}$")
GITHUB_SHORTHAND = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class RefNotFound(Exception):
    pass


class GitUnavailable(Exception):
    pass


def clone_url(repo: str) -> str:
    """owner/name means GitHub; anything else is handed to git as it is."""
    if GITHUB_SHORTHAND.match(repo) and not os.path.exists(repo):
        return f"https://github.com/{repo.removesuffix('.git')}.git"
    return repo


def auth_env(token: str | None) -> dict[str, str]:
    if not token:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


async def resolve(repo: str, ref: str, token: str | None = None, timeout_seconds: float = 30) -> str:
    """The full commit SHA `ref` names in `repo` (branch, tag, or a SHA given as is)."""
    if SHA_PATTERN.match(ref):
        return ref
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **auth_env(token)}
    process = await asyncio.create_subprocess_exec(
        "git", "ls-remote", "--", clone_url(repo), ref, f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_seconds)
    except asyncio.TimeoutError:
        process.kill()
        raise GitUnavailable(f"git ls-remote of {repo} timed out after {timeout_seconds}s") from None
    if process.returncode != 0:
        message = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        raise GitUnavailable(f"git ls-remote of {repo} failed: {message[0]}")
    refs = dict(reversed(line.split("\t", 1)) for line in stdout.decode().splitlines() if "\t" in line)
    # An annotated tag's peeled commit (^{}) wins over the tag object; a branch wins over a tag.
    for name in (f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", ref):
        if name in refs:
            return refs[name]
    raise RefNotFound(f"ref {ref!r} not found in {repo}")


def checkout_script(repo: str, revision: str, home: str) -> str:
    """Idempotent: clone on first use, then fetch the one commit and force the tree to it."""
    url, target = shlex.quote(clone_url(repo)), shlex.quote(home)
    return (
        "set -eu\n"
        f"mkdir -p {target} && cd {target}\n"
        "if [ ! -d .git ]; then git init -q; fi\n"
        f"git remote remove origin 2>/dev/null || true; git remote add origin {url}\n"
        f"git fetch -q --depth 1 origin {revision}\n"
        f"git checkout -q --force --detach {revision}\n"
        "git clean -q -ffdx -e node_modules\n"
    )


async def _git(args: list[str], cwd: str, token: str | None, timeout_seconds: float) -> bytes:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **auth_env(token)}
    process = await asyncio.create_subprocess_exec("git", *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_seconds)
    except asyncio.TimeoutError:
        process.kill()
        raise GitUnavailable(f"git {args[0]} timed out after {timeout_seconds}s") from None
    if process.returncode != 0:
        message = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        raise GitUnavailable(f"git {args[0]} failed: {message[0]}")
    return stdout


async def export(repo: str, revision: str, path: str, destination: str, token: str | None = None,
                 timeout_seconds: float = 120) -> None:
    """The files of commit `revision` (those under `path`, or all) written below `destination`, at
    their paths in the repository, without any git metadata: for an E2BTemplate's copy step."""
    with tempfile.TemporaryDirectory(prefix="export-") as scratch:
        await _git(["init", "-q"], scratch, None, timeout_seconds)
        await _git(["fetch", "-q", "--depth", "1", "--", clone_url(repo), revision], scratch, token, timeout_seconds)
        archive = await _git(["archive", "--format=tar", revision, "--", *([path] if path else [])], scratch, None,
                             timeout_seconds)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")
