// One query, one process: the query from $AGENT_QUERY (or stdin), one line per progress event on
// stderr, the answer on stdout; exit 1 with the reason on stderr when answering fails.
import type { Ask } from "./events.ts";

export async function runOnce(ask: Ask): Promise<never> {
  const query = process.env.AGENT_QUERY || (await Bun.stdin.text());
  try {
    for await (const event of ask(null, query.trim())) {
      if (event.type === "progress") process.stderr.write(`${oneLine(event.text)}\n`);
      else {
        process.stdout.write(event.text.endsWith("\n") ? event.text : `${event.text}\n`);
        process.exit(0);
      }
    }
    throw new Error("the agent ended without an answer");
  } catch (error) {
    process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
}

export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}
