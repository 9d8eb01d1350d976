// Fake Dexter Agent: echoes its config and the history it was given, with Dexter's event shapes.
let created = 0;

export class Agent {
  private constructor(private readonly config: Record<string, unknown>, private readonly number: number) {}

  static async create(config: Record<string, unknown> = {}) {
    return new Agent(config, ++created);
  }

  async *run(query: string, history?: { turns(): number }) {
    yield { type: "thinking", message: "planning\nthe research" };
    if (query === "hang") await new Promise(() => {}); // a research step that never ends
    yield { type: "tool_start", tool: "get_financials", args: { ticker: "AAPL" } };
    yield { type: "stream_progress", charDelta: 12, mode: "responding" };
    yield { type: "tool_end", tool: "get_financials", args: { ticker: "AAPL" }, result: "{}", duration: 7 };
    if (query === "fail") throw new Error("Dexter broke");
    if (query === "no key") {
      yield { type: "done", answer: "Error: the OpenAI API key is invalid", toolCalls: [], iterations: 1, totalTime: 1 };
      return;
    }
    const config = JSON.stringify(this.config);
    yield { type: "done", answer: `agent ${this.number} ${config} turns ${history?.turns() ?? "none"}: ${query}`,
            toolCalls: [], iterations: 2, totalTime: 5 };
  }
}
