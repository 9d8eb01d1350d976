"""Secret values out of everything the operator reports or stores."""

from __future__ import annotations

from dataclasses import dataclass, field

MARKER = "***"  # what a secret value becomes
SHORTEST_REDACTED = 4  # shorter values would blank out ordinary words of the text


@dataclass
class Redactor:
    """Knows the secret values of one piece of work and blanks them out of anything reported."""

    values: set[str] = field(default_factory=set)

    def add(self, value: str | None) -> None:
        if value and len(value) >= SHORTEST_REDACTED:
            self.values.add(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, MARKER)
        return text
