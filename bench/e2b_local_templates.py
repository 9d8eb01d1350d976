"""Measure e2b-local's templates: a build, and create-to-first-command from a template's layer
(overlayfs) against a sandbox of the host system.

    python bench/e2b_local_templates.py [--runs N] [--files N]

The template: one RUN step writing N files (default 2000) into /home/user/app, one COPY of a
small directory, ENV and WORKDIR. Build: Template.build() until ready. Create-to-first-command:
Sandbox.create() plus the first commands.run("ls | wc -l"), alternating plain and template
sandboxes, each killed before the next.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from remote_agents_local.e2b_local import launcher


def _ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.0f} ms, min {min(values) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp) / "context"
        (context / "app").mkdir(parents=True)
        for index in range(20):
            (context / "app" / f"module{index}.txt").write_text("x" * 1000)
        with launcher.start(Path(tmp) / "state") as server:
            os.environ.update(server.env)
            from e2b import Sandbox, Template  # imported once the environment points at the server

            template = (Template(file_context_path=str(context)).from_base_image()
                        .set_envs({"MODE": "bench"})
                        .run_cmd(f"mkdir -p /home/user/app && cd /home/user/app && "
                                 f"for i in $(seq {args.files}); do echo $i > file$i; done")
                        .copy("app", "/home/user/app/")
                        .set_workdir("/home/user/app"))
            started = time.monotonic()
            Template.build(template, "bench-template")
            build = time.monotonic() - started

            plain, templated = [], []
            for _ in range(args.runs):
                for name, times in ((None, plain), ("bench-template", templated)):
                    started = time.monotonic()
                    box = Sandbox.create(name, timeout=60) if name else Sandbox.create(timeout=60)
                    box.commands.run("ls | wc -l")
                    times.append(time.monotonic() - started)
                    box.kill()

    print(f"build ({args.files} files by RUN + COPY of 20): {build * 1000:.0f} ms")
    print(f"create-to-first-command, host system: {_ms(plain)} over {args.runs} runs")
    print(f"create-to-first-command, template layer: {_ms(templated)} over {args.runs} runs")


if __name__ == "__main__":
    main()
