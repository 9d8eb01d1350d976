"""Resolving branches to commits, once for everyone asking at the same moment.

An operator restart resumes every agent, and a push pokes every agent tracking the branch: each
reconcile resolves its ref, and hundreds of `git ls-remote` processes of the same branch would
queue on the event loop (spawning them is most of a restart's CPU). Concurrent lookups of one
(repo, ref, credentials) share one process instead. A lookup that began before the latest push
of its repository is never shared with a caller that came after that push, so a push is never
answered with the commit from before it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from remote_agents.controller.sources import git
from remote_agents.controller.sources.repos import repo_key


class RefResolver:
    def __init__(self, timeout_seconds: float):
        self.timeout_seconds = timeout_seconds
        self._pushes: dict[str, int] = defaultdict(int)  # repo key -> pushes announced so far
        self._lookups: dict[tuple[str, str, str | None], tuple[int, asyncio.Task[str]]] = {}

    def pushed(self, repo_keys: Iterable[str]) -> None:
        """A push to this repository was announced: lookups already running may predate it."""
        for key in repo_keys:
            self._pushes[key] += 1

    async def resolve(self, repo: str, ref: str, token: str | None = None) -> str:
        """The commit `ref` names in `repo` now (raises git.RefNotFound / GitUnavailable)."""
        if git.SHA_PATTERN.match(ref):
            return ref
        key = (repo, ref, token)
        pushes = self._pushes[repo_key(repo)]
        lookup = self._lookups.get(key)
        if lookup is None or lookup[0] < pushes:
            lookup = (pushes, asyncio.get_running_loop().create_task(
                git.resolve(repo, ref, token, self.timeout_seconds)))
            self._lookups[key] = lookup
            lookup[1].add_done_callback(lambda task, key=key, lookup=lookup: self._finished(key, lookup))
        # Shielded: a caller that gives up (its handler cancelled) does not cancel the others' lookup.
        return await asyncio.shield(lookup[1])

    def _finished(self, key: tuple[str, str, str | None], lookup: tuple[int, asyncio.Task[str]]) -> None:
        if self._lookups.get(key) is lookup:
            del self._lookups[key]
        if not lookup[1].cancelled():
            lookup[1].exception()  # retrieved: every caller may have given up before it ended
