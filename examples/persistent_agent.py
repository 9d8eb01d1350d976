"""An agent keeps its state across queries and across a pause: pausing an E2B sandbox keeps its
memory and disk, so a note written by the first query is still there after resuming."""

from __future__ import annotations

import sys

import demo

# The query arrives in $AGENT_QUERY: "remember: X" appends X to a file, anything else recalls it.
MEMORY_COMMAND = ('case "$AGENT_QUERY" in '
                  '"remember: "*) echo "${AGENT_QUERY#remember: }" >> memory.txt; echo "noted";; '
                  '*) echo "I remember:"; cat memory.txt;; esac')


def main() -> int:
    orchestrator = demo.orchestrator()
    agent = orchestrator.launch_agent(query_command=MEMORY_COMMAND)
    sandbox = orchestrator.health_check(agent)["sandbox"]
    print(f"launched {agent} (sandbox {sandbox})")
    try:
        print(orchestrator.query_agent(agent, "remember: NVDA closed at a record high", timeout=60)["output"], end="")
        orchestrator.pause_agent(agent)
        print(f"paused: phase {orchestrator.health_check(agent)['phase']}")
        orchestrator.resume_agent(agent)
        health = orchestrator.health_check(agent)
        print(f"resumed: phase {health['phase']}, same sandbox: {health['sandbox'] == sandbox}")
        result = orchestrator.query_agent(agent, "what do you remember?", timeout=60)
        print(result["output"], end="")
        return 0 if result["success"] else 1
    finally:
        orchestrator.terminate_agent(agent)
        print(f"terminated {agent}")


if __name__ == "__main__":
    sys.exit(main())
