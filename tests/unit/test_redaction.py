"""The Redactor: every form of a secret value it knows becomes the named marker."""

from __future__ import annotations

import pytest

from remote_agents.controller.redaction import MARKER, Redactor


def redactor(*values: str | None) -> Redactor:
    redact = Redactor()
    for value in values:
        redact.add(value)
    return redact


@pytest.mark.parametrize("values, text, expected", [
    (("s3cret-value",), "token=s3cret-value; again s3cret-value", f"token={MARKER}; again {MARKER}"),
    (("file-key-9c\n",), "key=file-key-9c\n", f"key={MARKER}\n"),  # a Secret made from a file
    (("  padded-key ",), "[padded-key]", f"[{MARKER}]"),
    (("abcd", "abcdef"), "abcdef abcd", f"{MARKER} {MARKER}"),  # the longer value first, no leftover "ef"
    (("abc", "", None), "abc", "abc"),  # too short to tell from ordinary words
    ((), "nothing to hide", "nothing to hide"),
])
def test_known_values_become_the_marker(values, text, expected):
    assert redactor(*values)(text) == expected


KEY = "-----BEGIN TEST KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASCBKcwggSjAgEAAoIBAQC7\nab\n-----END TEST KEY-----\n"


def test_a_value_of_several_lines_is_redacted_whole_and_a_line_at_a_time():
    redact = redactor(KEY)
    assert redact(f"key: {KEY}") == f"key: {MARKER}\n"
    # As the live stream redacts: line by line (tests/unit/test_task_progress.py has the stream itself).
    assert [redact(line) for line in KEY.splitlines(keepends=True)] == [f"{MARKER}\n"] * 3 + ["ab\n", f"{MARKER}\n"]
    assert redact("only AASCBKcwggSjAgEAAoIBAQC7 leaked") == f"only {MARKER} leaked"


def test_the_marker_says_what_happened():
    assert MARKER == "[redacted]"
