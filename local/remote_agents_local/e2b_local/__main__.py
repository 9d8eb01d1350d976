"""`python -m remote_agents_local.e2b_local [OPTIONS]`: the server with all of its options (the
launcher runs it this way); `remote-agents e2b-local` is the same server behind the main CLI."""

from __future__ import annotations

import argparse
import sys

from remote_agents_local.e2b_local import sdk_stubs

sdk_stubs.register_bare_sdk_package()  # this process serves E2B; it never uses the client SDK

from remote_agents_local.e2b_local import config, server  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2b-local", description="a local E2B-compatible sandbox server")
    config.add_arguments(parser)
    return server.main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
