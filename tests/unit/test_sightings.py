"""Sightings: what the last fleet-wide list showed, and reconciles waiting for the one under way."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from remote_agents.api.names import SANDBOX_UID_KEY
from remote_agents.controller.sandboxes import ObservedSandbox
from remote_agents.controller.agents.sightings import Sightings

NOW = datetime.now(timezone.utc)


def sandbox(uid: str) -> ObservedSandbox:
    return ObservedSandbox(sandbox_id=f"sb-{uid}", state="running", metadata={SANDBOX_UID_KEY: uid}, started_at=NOW, end_at=NOW)


async def test_with_nothing_known_and_no_list_under_way_a_reconcile_looks_itself():
    assert await Sightings(max_age_seconds=45).look("a") is None


async def test_reconciles_wait_for_the_fleet_list_under_way_instead_of_listing_each():
    sightings = Sightings(max_age_seconds=45)
    listed = asyncio.Event()

    async def fleet_check() -> None:
        async with sightings.listing():
            await listed.wait()  # the pages are still coming
            sightings.record([sandbox("a"), sandbox("b")])
    check = asyncio.create_task(fleet_check())
    await asyncio.sleep(0)
    looks = [asyncio.create_task(sightings.look(uid)) for uid in ("a", "b", "new")]
    await asyncio.sleep(0.05)
    assert not any(look.done() for look in looks)  # waiting, not answering "unknown"
    listed.set()
    a, b, new = await asyncio.gather(*looks)
    assert [s.sandbox_id for s in a] == ["sb-a"] and [s.sandbox_id for s in b] == ["sb-b"]
    assert new is None  # not in the list: created since, so it must look for itself
    await check


async def test_a_failed_fleet_list_releases_the_waiting_reconciles():
    sightings = Sightings(max_age_seconds=45)

    async def failing_check() -> None:
        async with sightings.listing():
            await asyncio.sleep(0.05)
            raise OSError("e2b unreachable")
    check = asyncio.create_task(failing_check())
    await asyncio.sleep(0)
    assert await asyncio.wait_for(sightings.look("a"), 5) is None
    assert isinstance((await asyncio.gather(check, return_exceptions=True))[0], OSError)
