"""Per-call cost of e2b-local through the real SDK: commands.run, files.write/read, create.

    python bench/e2b_local_commands.py [--calls 200] [--rounds 3]

For each round, one server and one sandbox: `--calls` sequential commands.run("true") (wall time
per call, and the server's CPU per call including every process it started and reaped: the
helper, bash, the command), then as many files.write + files.read of 1 KiB, then create + first
command of a new sandbox. Prints the median over rounds of each round's mean.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from remote_agents_local.e2b_local import launcher

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid` (children count once reaped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            with launcher.start(Path(tmp) / f"state-{round_}") as server:
                os.environ.update(server.env)
                from e2b import Sandbox  # imported once the environment points at the server

                box = Sandbox.create(timeout=600)
                box.commands.run("true")  # the sandbox's first command sets it up
                cpu, started = cpu_seconds(server.pid), time.monotonic()
                for _ in range(args.calls):
                    box.commands.run("true")
                record("commands.run wall ms", (time.monotonic() - started) / args.calls * 1000)
                record("commands.run server+children CPU ms", (cpu_seconds(server.pid) - cpu) / args.calls * 1000)
                payload = b"x" * 1024
                started = time.monotonic()
                for i in range(args.calls):
                    box.files.write(f"/home/user/f{i % 10}", payload)
                record("files.write 1 KiB wall ms", (time.monotonic() - started) / args.calls * 1000)
                started = time.monotonic()
                for i in range(args.calls):
                    box.files.read(f"/home/user/f{i % 10}", format="bytes")
                record("files.read 1 KiB wall ms", (time.monotonic() - started) / args.calls * 1000)
                box.kill()
                started = time.monotonic()
                fresh = Sandbox.create(timeout=60)
                fresh.commands.run("true")
                record("create + first commands.run wall ms", (time.monotonic() - started) * 1000)
                fresh.kill()

    for name, values in results.items():
        print(f"{name}: median {statistics.median(values):.2f} (rounds: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
