"""PromQL read by a real parser (promql-parser, the Rust parser Greptime maintains): an
expression that does not parse fails, and the series it selects are its vector selectors."""

from __future__ import annotations

import promql_parser


def selected_series(expr: str) -> set[str]:
    """Names of the series an expression selects (ValueError when it is not valid PromQL)."""
    found: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)
    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def matchers(expr: str, series: str) -> list[dict[str, str]]:
    """The equality matchers (label -> value) of each selector of `series` in `expr`."""
    found: list[dict[str, str]] = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name == series:
            found.append({m.name: m.value for m in node.matchers.matchers if m.op == promql_parser.MatchOp.Equal})
    promql_parser.walk(promql_parser.parse(expr), visit)
    return found
