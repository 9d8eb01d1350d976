"""`.env.example` names every setting the operator reads from the environment, with no values
filled in for secrets."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_remote_agents_variable_the_code_reads_is_in_env_example():
    sources = "\n".join(p.read_text() for p in (ROOT / "operator" / "remote_agents").rglob("*.py"))
    read = set(re.findall(r'"(REMOTE_AGENTS_[A-Z0-9_]+|GITHUB_WEBHOOK_SECRET)"', sources))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert len(read) > 10 and read - documented == set()


def test_secrets_are_left_empty():
    example = (ROOT / ".env.example").read_text()
    for name in ("E2B_API_KEY", "GITHUB_WEBHOOK_SECRET"):
        assert re.search(rf"^{name}=$", example, re.MULTILINE), name
