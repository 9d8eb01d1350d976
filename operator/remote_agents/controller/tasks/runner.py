"""The in-sandbox side of a run: the runner script, where its files are, and how it reports.

The runner is the start call's command itself (no file to write first), started detached. Its
files are $RUN_FILES.<name>, next to every other run's (one directory: no mkdir per run). The
lock (created with noclobber, O_EXCL) makes a repeated start (after a crash) a no-op. The command
runs in a subshell (a fork, not a new bash) that job control (`set -m`, off again once it is
started) puts in a process group of its own, whose id goes into the pid file: signalling that
group reaches the command and all it started. The deadline is the operator's (see
decide.deadline_signal). The exit line ("CODE", or "CODE stderr" when the command wrote to
stderr, so that a quiet run costs no read) goes to a file, read as "not yet" until the line is
complete, and to the runner's stdout, where an operator that holds the run's stream reads it
without asking. A command told AGENT_ANSWER_FD (the resident client) gets that stream as fd 3,
for a copy of a short answer; any other command has no fd 3 (a child it leaves behind must not
hold the stream open). The query reaches the command as $AGENT_QUERY and on stdin. Builtins wherever
possible: every process started here is CPU in the sandbox, once per task.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

RUNS_DIR = "/home/user/.remote-agents/tasks"
RUNNER = """[ -d "${RUN_FILES%/*}" ] || mkdir -p "${RUN_FILES%/*}"
cd "$AGENT_WORKDIR" || { echo 97 > "$RUN_FILES.exit_code"; echo 97; exit 0; }
set -C; { : > "$RUN_FILES.lock"; } 2>/dev/null || exit 0; set +C
printf '%s' "$AGENT_QUERY" > "$RUN_FILES.query"
set -m
( [ -n "$AGENT_ANSWER_FD" ] || exec 3>&-; eval "$AGENT_COMMAND" ) 3>&1 < "$RUN_FILES.query" > "$RUN_FILES.stdout" 2> "$RUN_FILES.stderr" &
set +m; echo $! > "$RUN_FILES.pid"
wait $!
code=$?
if [ -s "$RUN_FILES.stderr" ]; then line="$code stderr"; else line="$code"; fi
echo "$line" > "$RUN_FILES.exit_code"
echo "$line"
"""
EXIT_LINE = re.compile(r"(-?\d+)( stderr)?\n")


def exit_line(text: str) -> re.Match | None:
    """The runner's exit line, if `text` ends with a complete one (the login shell may print more).
    Group 1 is the exit code, group 2 is set when the command wrote to stderr."""
    last = text[text.rfind("\n", 0, -1) + 1:]
    return EXIT_LINE.fullmatch(last)


def run_files(status: Mapping[str, Any]) -> str:
    """The path prefix of a run's files in its sandbox."""
    return f"{RUNS_DIR}/{status['runId']}"


def run_file(status: Mapping[str, Any], name: str) -> str:
    return f"{run_files(status)}.{name}"


def runner_env(status: Mapping[str, Any], query: str, workdir: str, command: str) -> dict[str, str]:
    """What the runner reads, besides the agent's own environment."""
    return {"AGENT_QUERY": query, "RUN_FILES": run_files(status), "AGENT_WORKDIR": workdir, "AGENT_COMMAND": command}


def signal_command(status: Mapping[str, Any], signal: str) -> str:
    """A command that sends `signal` to the run's process group: the command and everything it started."""
    return f"kill -{signal} -- -$(cat {shlex.quote(run_file(status, 'pid'))}) 2>/dev/null; true"


def cancel_command(status: Mapping[str, Any], grace_seconds: int) -> str:
    """A command that ends a run for good and prints "stopped": when the runner never got as far as
    its lock, taking the lock makes any late start a no-op; otherwise the run's process group gets
    SIGTERM, SIGKILL after `grace_seconds` if any of it is still there, and the command returns once
    the group is gone (a group that outlives SIGKILL briefly is waited for, a few seconds at most)."""
    files = shlex.quote(run_files(status))
    return f"""f={files}
[ -d "${{f%/*}}" ] || mkdir -p "${{f%/*}}"
set -C; if {{ : > "$f.lock"; }} 2>/dev/null; then echo stopped; exit 0; fi; set +C
i=0; while [ ! -s "$f.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
g=$(cat "$f.pid" 2>/dev/null)
if [ -n "$g" ] && kill -TERM -- -"$g" 2>/dev/null; then
  i=0; while kill -0 -- -"$g" 2>/dev/null && [ $i -lt {grace_seconds * 10} ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL -- -"$g" 2>/dev/null
  i=0; while kill -0 -- -"$g" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
fi
echo stopped
"""
