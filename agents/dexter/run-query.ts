// One-shot Dexter: `bun run run-query.ts` in Dexter's checkout answers $AGENT_QUERY (or stdin).
import { runOnce } from "../harness/oneshot.ts";
import { ask } from "./dexter.ts";

await runOnce(ask);
