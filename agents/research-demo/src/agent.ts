// A research agent of Dexter's shape: LangChain's ChatOpenAI on the OpenAI Responses API, streamed,
// with one tool that reads an HTTP data endpoint, looping until the model answers without a tool call.
// Conversations (sessions) keep their turns in memory, like Dexter's InMemoryChatHistory.
import { AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { ChatOpenAI } from "@langchain/openai";
import { z } from "zod";
import type { AgentEvent, Ask } from "../../harness/events.ts";

const MAX_ITERATIONS = 6;
const SYSTEM_PROMPT =
  "You are a financial research assistant. Use get_price for market data; answer briefly with the numbers.";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const getPrice = tool(
  async ({ ticker }: { ticker: string }) => {
    const base = required("MARKET_DATA_URL").replace(/\/$/, "");
    const response = await fetch(`${base}/prices/${encodeURIComponent(ticker)}`);
    const body = await response.text();
    if (!response.ok) throw new Error(`market data answered ${response.status}: ${body}`);
    return body;
  },
  {
    name: "get_price",
    description: "The latest closing price of a stock, by ticker.",
    schema: z.object({ ticker: z.string().describe("The stock's ticker, e.g. ACME") }),
  },
);

function chatModel() {
  return new ChatOpenAI({
    model: process.env.RESEARCH_MODEL || "gpt-4.1-mini",
    apiKey: required("OPENAI_API_KEY"),
    useResponsesApi: true,
    streaming: true,
    // The OpenAI SDK reads OPENAI_BASE_URL too; spelled out so the dependency on it is visible.
    configuration: process.env.OPENAI_BASE_URL ? { baseURL: process.env.OPENAI_BASE_URL } : {},
  }).bindTools([getPrice]);
}

async function* research(query: string, history: BaseMessage[]): AsyncGenerator<AgentEvent> {
  const model = chatModel();
  const messages: BaseMessage[] = [new SystemMessage(SYSTEM_PROMPT), ...history, new HumanMessage(query)];
  for (let iteration = 1; iteration <= MAX_ITERATIONS; iteration++) {
    yield { type: "progress", text: `thinking (step ${iteration})` };
    let response: AIMessageChunk | undefined;
    for await (const chunk of await model.stream(messages)) response = response ? response.concat(chunk) : chunk;
    if (!response) throw new Error("the model sent an empty stream");
    if (!response.tool_calls?.length) {
      yield { type: "answer", text: response.text };
      return;
    }
    messages.push(response);
    for (const call of response.tool_calls) {
      yield { type: "progress", text: `tool ${call.name} ${JSON.stringify(call.args)}` };
      const result = await getPrice.invoke(call.args as { ticker: string });
      yield { type: "progress", text: `tool ${call.name} returned ${result}` };
      messages.push(new ToolMessage({ content: result, tool_call_id: call.id ?? "", name: call.name }));
    }
  }
  throw new Error(`no answer after ${MAX_ITERATIONS} steps`);
}

const conversations = new Map<string, BaseMessage[]>();

export const ask: Ask = async function* (session, query) {
  const history = session ? (conversations.get(session) ?? []) : [];
  for await (const event of research(query, history)) {
    if (event.type === "answer" && session) {
      conversations.set(session, [...history, new HumanMessage(query), new AIMessage(event.text)]);
    }
    yield event;
  }
};
