"""RefResolver against a real git repository: concurrent lookups share one `git ls-remote`, and
a push announced meanwhile is never answered with a lookup that started before it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from remote_agents.controller.sources import git as git_source
from remote_agents.controller.sources.refs import RefResolver
from remote_agents.controller.sources.repos import repo_key


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, text: str) -> str:
    (repo / "file.txt").write_text(text)
    git(repo, "add", "file.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", text)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    commit(tmp_path, "one")
    return tmp_path


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """Counts the real ls-remote lookups (each still runs git)."""
    started: list[str] = []
    real = git_source.resolve

    async def counted(repo: str, ref: str, token=None, timeout_seconds: float = 30) -> str:
        started.append(ref)
        return await real(repo, ref, token, timeout_seconds)
    monkeypatch.setattr(git_source, "resolve", counted)
    return started


async def test_concurrent_lookups_of_one_ref_share_one_git_process(repo: Path, lookups: list[str]):
    resolver = RefResolver(timeout_seconds=30)
    head = git(repo, "rev-parse", "HEAD")
    results = await asyncio.gather(*(resolver.resolve(str(repo), "main") for _ in range(50)))
    assert results == [head] * 50
    assert lookups == ["main"]
    # Finished lookups are not cached: the next question asks git again.
    newer = commit(repo, "two")
    assert await resolver.resolve(str(repo), "main") == newer
    assert lookups == ["main", "main"]


async def test_a_push_is_never_answered_by_a_lookup_from_before_it(repo: Path, lookups: list[str], monkeypatch):
    resolver = RefResolver(timeout_seconds=30)
    before = git(repo, "rev-parse", "HEAD")
    release = asyncio.Event()
    counted = git_source.resolve

    async def first_one_slow(*args, **kwargs) -> str:
        found = await counted(*args, **kwargs)
        if len(lookups) == 1:
            await release.wait()  # answered from before the push, but returns only later
        return found
    monkeypatch.setattr(git_source, "resolve", first_one_slow)

    early = asyncio.create_task(resolver.resolve(str(repo), "main"))
    while not lookups:
        await asyncio.sleep(0.01)
    joined = asyncio.create_task(resolver.resolve(str(repo), "main"))  # no push yet: shares it
    await asyncio.sleep(0)  # let it ask
    pushed = commit(repo, "pushed")
    resolver.pushed({repo_key(str(repo))})
    after_push = await resolver.resolve(str(repo), "main")
    release.set()
    assert after_push == pushed
    assert await early == before and await joined == before
    assert len(lookups) == 2


async def test_a_failed_lookup_fails_every_caller_and_a_sha_needs_none(repo: Path, lookups: list[str]):
    resolver = RefResolver(timeout_seconds=30)
    results = await asyncio.gather(*(resolver.resolve(str(repo), "no-such-branch") for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, git_source.RefNotFound) for r in results)
    assert lookups == ["no-such-branch"]
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert await resolver.resolve(str(repo), sha) == sha
    assert lookups == ["no-such-branch"]
