// One-shot: `bun run src/query.ts` answers $AGENT_QUERY (or stdin) and exits.
import { runOnce } from "../../harness/oneshot.ts";
import { ask } from "./agent.ts";

await runOnce(ask);
