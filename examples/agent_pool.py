"""A pool of three agents answers five questions in parallel; results come back in order."""

from __future__ import annotations

import sys

import demo

QUESTIONS = [
    "Compare Apple and Microsoft operating margins",
    "Summarise Tesla's latest 10-K risk factors",
    "What is Amazon's free cash flow trend?",
    "How exposed is Alphabet to ad spending cycles?",
    "Which semiconductor stocks have the highest R&D intensity?",
]


def main() -> int:
    orchestrator = demo.orchestrator()
    pool = orchestrator.create_agent_pool(3)
    print(f"pool {pool} is ready: {', '.join(a['name'] for a in orchestrator.list_agents() if a['pool'] == pool)}")
    try:
        results = orchestrator.query_pool(pool, QUESTIONS, timeout=120)
        for question, result in zip(QUESTIONS, results):
            print(f"[{result['agent']}] {question}")
            print("  " + result["output"].rstrip("\n").replace("\n", "\n  "))
        return 0 if all(r["success"] for r in results) else 1
    finally:
        orchestrator.delete_pool(pool)
        print(f"deleted pool {pool}")


if __name__ == "__main__":
    sys.exit(main())
