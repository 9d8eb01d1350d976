"""Pulumi entry point (Pulumi.yaml: main: infra/). Everything lives in remote_agents_infra."""

import sys
from pathlib import Path

# The program's directory is not necessarily the working directory or on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from remote_agents_infra import program  # noqa: E402

program.run()
