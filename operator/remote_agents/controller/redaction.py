"""Secret values out of everything the operator reports or stores.

Values are found as they are, without their surrounding whitespace (a Secret made from a file
ends with a newline the program may not print), and so is each line of a value of several lines
(a key file): text redacted a line at a time (the live stream) never shows a piece of it, nor does
a text that prints only some of those lines. A value printed in another form (base64,
URL-encoded, re-wrapped) is not recognised. Redact whole texts before cutting
them to a size: a value cut in two by a truncation would leave a piece of it behind."""

from __future__ import annotations

from dataclasses import dataclass, field

MARKER = "[redacted]"  # what a secret value becomes
SHORTEST_REDACTED = 4  # shorter values would blank out ordinary words of the text
SHORTEST_REDACTED_LINE = 8  # of a value of several lines: its shorter lines are not worth a blank


@dataclass
class Redactor:
    """Knows the secret values of one piece of work and blanks them out of anything reported."""

    values: set[str] = field(default_factory=set)

    def add(self, value: str | None) -> None:
        core = (value or "").strip()  # covers the value with its whitespace too, and keeps that whitespace
        if len(core) >= SHORTEST_REDACTED:
            self.values.add(core)
        lines = [line.strip() for line in core.splitlines()]
        if len(lines) > 1:
            self.values.update(line for line in lines if len(line) >= SHORTEST_REDACTED_LINE)

    def __call__(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, MARKER)
        return text
