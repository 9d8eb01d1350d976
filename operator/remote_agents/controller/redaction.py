"""Secret values out of everything the operator reports or stores.

Values are found as they are, without their surrounding whitespace (a Secret made from a file
ends with a newline the program may not print): a value printed in another form
(base64, URL-encoded, split across lines) is not recognised. Redact whole texts before cutting
them to a size: a value cut in two by a truncation would leave a piece of it behind."""

from __future__ import annotations

from dataclasses import dataclass, field

MARKER = "[redacted]"  # what a secret value becomes
SHORTEST_REDACTED = 4  # shorter values would blank out ordinary words of the text


@dataclass
class Redactor:
    """Knows the secret values of one piece of work and blanks them out of anything reported."""

    values: set[str] = field(default_factory=set)

    def add(self, value: str | None) -> None:
        core = (value or "").strip()  # covers the value with its whitespace too, and keeps that whitespace
        if len(core) >= SHORTEST_REDACTED:
            self.values.add(core)

    def __call__(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, MARKER)
        return text
