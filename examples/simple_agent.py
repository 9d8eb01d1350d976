"""Launch an agent, ask it one question, terminate it."""

from __future__ import annotations

import sys

import demo


def main() -> int:
    orchestrator = demo.orchestrator()
    agent = orchestrator.launch_agent()
    print(f"launched {agent} (sandbox {orchestrator.health_check(agent)['sandbox']})")
    try:
        result = orchestrator.query_agent(agent, "What drove NVIDIA's revenue growth last quarter?", timeout=120)
        print(f"answer from {result['agent']} in {result['duration_seconds']}s:")
        print(result["output"], end="")
        return 0 if result["success"] else 1
    finally:
        orchestrator.terminate_agent(agent)
        print(f"terminated {agent}")


if __name__ == "__main__":
    sys.exit(main())
