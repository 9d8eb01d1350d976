// Dexter (github.com/virattt/dexter) behind the harness's Ask: Dexter's own Agent and chat history,
// loaded from its checkout ($DEXTER_DIR, default: the working directory, where the operator checks it
// out). Dexter's code is never copied here; this file only calls its public Agent API.
import type { AgentEvent, Ask } from "../harness/events.ts";

// The slice of Dexter's API this runner uses (src/agent/types.ts, src/utils/in-memory-chat-history.ts).
type DexterEvent = { type: string; [field: string]: unknown };
type DexterAgent = { run(query: string, history?: ChatHistory): AsyncGenerator<DexterEvent> };
type ChatHistory = { saveUserQuery(query: string): void; saveAnswer(answer: string): Promise<void> };

const dexterDir = (process.env.DEXTER_DIR || process.cwd()).replace(/\/$/, "");
const { Agent } = await import(`${dexterDir}/src/agent/index.ts`);
const { InMemoryChatHistory } = await import(`${dexterDir}/src/utils/in-memory-chat-history.ts`);
// Unset: Dexter's default model (an OpenAI one, so OPENAI_API_KEY).
const model = process.env.DEXTER_MODEL || undefined;

function createAgent(): Promise<DexterAgent> {
  // headless: no interactive tools; memoryEnabled false: no memory files or embeddings on disk.
  return Agent.create({ channel: "headless", memoryEnabled: false, model });
}

// One progress line per Dexter event worth a line; stream_progress (one per streamed chunk) is not.
export function describe(event: DexterEvent): string | null {
  const args = (value: unknown) => JSON.stringify(value ?? {});
  switch (event.type) {
    case "thinking": return `thinking: ${event.message}`;
    case "tool_start": return `tool ${event.tool} ${args(event.args)}`;
    case "tool_progress": return `tool ${event.tool}: ${event.message}`;
    case "tool_end": return `tool ${event.tool} done in ${event.duration} ms`;
    case "tool_error": return `tool ${event.tool} failed: ${event.error}`;
    case "tool_limit": return `tool ${event.tool}: ${event.warning ?? "limit reached"}`;
    case "tool_denied": return `tool ${event.tool} denied`;
    case "context_cleared": return `context cleared (${event.clearedCount} tool results)`;
    case "compaction": return `compaction ${event.phase}`;
    case "stream_progress": return null;
    default: return event.type;
  }
}

// One Dexter Agent per session, with its in-memory chat history (what Dexter's own gateway keeps).
const sessions = new Map<string, { agent: DexterAgent; history: ChatHistory }>();

async function conversation(session: string | null) {
  if (!session) return { agent: await createAgent(), history: undefined };
  let held = sessions.get(session);
  if (!held) {
    held = { agent: await createAgent(), history: new InMemoryChatHistory(model) };
    sessions.set(session, held);
  }
  return held;
}

export const ask: Ask = async function* (session, query): AsyncGenerator<AgentEvent> {
  const { agent, history } = await conversation(session);
  history?.saveUserQuery(query);
  for await (const event of agent.run(query, history)) {
    if (event.type === "done") {
      const answer = String(event.answer ?? "");
      // Dexter reports a failed run (the LLM unreachable, a bad key, no tools) as a `done` answer:
      // "Error: ..." after its retries, or a run of zero iterations. Here it fails the query instead.
      if (answer.startsWith("Error: ") || event.iterations === 0) throw new Error(answer.replace(/^Error: /, ""));
      await history?.saveAnswer(answer);
      yield { type: "answer", text: answer };
      return;
    }
    const line = describe(event);
    if (line) yield { type: "progress", text: line };
  }
};
