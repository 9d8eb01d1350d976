"""A task's stdout and stderr, live, straight from its agent's sandbox (the client's one E2B use).

The run's command writes both streams to files in the sandbox (controller/tasks/runner.py), so
following a run is reading those files from their first byte while they grow: one `tail -F` per
file in the sandbox, started through the `e2b` SDK with the caller's E2B key. The operator is
not in the data path, a reconnect starts from the beginning again, and a run that already ended
is printed whole. Lines are redacted of the agent's Secret values, as the operator redacts what
it stores; a line without its newline yet is held until it is complete (or the run ends).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from e2b import Sandbox, SandboxState

from remote_agents.controller.tasks.runner import run_files

# Waits for the runner's pid file (a claimed run may not have started yet; not beyond the 15 s
# after which the operator starts it again, NOT_STARTED_SECONDS, plus as much), then follows both
# files by name (-F: the command's redirections may create them after the pid file) until the
# command's process group leader exits; a run that has ended (or with ONCE set, any run) is
# printed as it is.
FOLLOW = """f="$RUN_FILES"
n=0
until [ -e "$f.pid" ] || [ -e "$f.exit_code" ]; do n=$((n + 1)); [ $n -gt 300 ] && exit 0; sleep 0.1; done
pid=$(cat "$f.pid" 2>/dev/null)
if [ -n "$ONCE" ] || [ -e "$f.exit_code" ] || ! kill -0 "$pid" 2>/dev/null; then
  cat "$f.stdout" 2>/dev/null; cat "$f.stderr" >&2 2>/dev/null; exit 0
fi
tail -n +1 -F -s 0.2 --pid="$pid" "$f.stdout" 2>/dev/null &
tail -n +1 -F -s 0.2 --pid="$pid" "$f.stderr" >&2 2>/dev/null
wait
"""
STDOUT, STDERR = "stdout", "stderr"
NOTE = "note"  # not the run's output: why it is shown the way it is (the CLI prints it on stderr)


class SandboxAsleep(Exception):
    """The sandbox is paused (following would wake it) or gone."""


class StreamLost(Exception):
    """The connection to the sandbox failed while following; following again starts over."""


@dataclass
class Lines:
    """Cuts one stream's chunks into redacted complete lines (a Secret value split across two
    chunks is whole again before it is redacted)."""

    redact: Callable[[str], str]
    pending: str = ""

    def feed(self, chunk: str) -> list[str]:
        self.pending += chunk
        end = self.pending.rfind("\n") + 1
        if not end:
            return []
        complete, self.pending = self.pending[:end], self.pending[end:]
        return [self.redact(line) for line in complete.splitlines(keepends=True)]

    def rest(self) -> list[str]:
        rest, self.pending = self.pending, ""
        return [self.redact(rest)] if rest else []


def follow(status: Mapping[str, Any], api_key: str | None, redact: Callable[[str], str],
           once: bool = False) -> Iterator[tuple[str, str]]:
    """(stream, line) as the task's run (its status' sandboxID and runId) writes them, from its
    first line until it has ended and all is read (`once`: what it has written so far).
    SandboxAsleep, before any line, when the sandbox is paused or gone: connecting would resume
    a paused one."""
    sandbox_id = status["sandboxID"]
    opts = {"api_key": api_key} if api_key else {}
    try:
        state = Sandbox.get_info(sandbox_id, **opts).state
    except Exception as error:  # noqa: BLE001 - the SDK's not-found and the like: nothing to follow
        raise SandboxAsleep(f"sandbox {sandbox_id}: {error}") from None
    if state != SandboxState.RUNNING:
        raise SandboxAsleep(f"sandbox {sandbox_id} is {state.value}")
    envs = {"RUN_FILES": run_files(status), **({"ONCE": "1"} if once else {})}
    try:
        handle = Sandbox.connect(sandbox_id, **opts).commands.run(FOLLOW, background=True, timeout=0,
                                                                   retain_output=False, envs=envs)
    except Exception as error:  # noqa: BLE001 - the SDK's errors, whichever: said as one
        raise StreamLost(f"could not start following in sandbox {sandbox_id}: {error}") from None
    streams = {STDOUT: Lines(redact), STDERR: Lines(redact)}
    read_all = False
    try:
        for stdout, stderr, _ in _chunks(handle, sandbox_id):
            for name, chunk in ((STDOUT, stdout), (STDERR, stderr)):
                if chunk:
                    yield from ((name, line) for line in streams[name].feed(chunk))
        read_all = True
    finally:
        if not read_all:  # the caller stopped early: its tails need not wait for the run's end
            try:
                handle.kill()
            except Exception:  # noqa: BLE001 - best effort; they end with the run anyway
                pass
    for name, lines in streams.items():
        yield from ((name, line) for line in lines.rest())


def _chunks(handle: Any, sandbox_id: str) -> Iterator[tuple[str | None, str | None, Any]]:
    try:
        yield from handle
    except Exception as error:  # noqa: BLE001 - a dropped stream, whatever the SDK calls it
        raise StreamLost(f"the stream from sandbox {sandbox_id} broke: {error}") from None
