"""`python -m remote_agents_local.llm_standin --script FILE [--port P]`; `remote-agents llm-standin` is the same."""

import sys

from remote_agents_local.llm_standin.server import main

if __name__ == "__main__":
    sys.exit(main())
