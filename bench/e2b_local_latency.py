"""Measure the local E2B server: startup-to-first-request and create-to-first-command.

    python bench/e2b_local_latency.py [--runs N]

Startup: from spawning `remote-agents e2b-local` (via the launcher) until /health answers.
Create-to-first-command: Sandbox.create() plus the first commands.run("true") through the SDK.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from remote_agents_local.e2b_local import launcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs

    startups, first_commands = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            started = time.monotonic()
            with launcher.start(Path(tmp) / f"state-{run}") as server:
                startups.append(time.monotonic() - started)
                os.environ.update(server.env)
                from e2b import Sandbox  # imported once the environment points at the server

                started = time.monotonic()
                box = Sandbox.create(timeout=60)
                box.commands.run("true")
                first_commands.append(time.monotonic() - started)
                box.kill()

    for name, values in (("startup-to-first-request", startups), ("create-to-first-command", first_commands)):
        print(f"{name}: median {statistics.median(values) * 1000:.0f} ms, "
              f"min {min(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms over {runs} runs")


if __name__ == "__main__":
    main()
