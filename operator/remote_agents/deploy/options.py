"""Flags of `remote-agents manifests` (and `python -m remote_agents.deploy.manifests`). Kept apart
so that building the CLI's parser does not import the models and YAML the rendering needs."""

from __future__ import annotations

import argparse

DEFAULT_DIR = "manifests/base"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=DEFAULT_DIR)
    parser.add_argument("--check", action="store_true", help="fail if the files differ from the modules")
    parser.add_argument("--watch-namespace", action="append", default=[], metavar="NAMESPACE",
                        help="render a namespaced install serving only these namespaces (repeatable): a Role "
                             "per namespace instead of cluster-wide Secret and ConfigMap access; use another --dir")
