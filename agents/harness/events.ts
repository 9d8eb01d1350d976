// What an agent yields while it answers one query: progress lines, then exactly one answer.
// Both runners (one-shot and resident) consume this, so every agent here plugs in the same way.
export type AgentEvent = { type: "progress"; text: string } | { type: "answer"; text: string };

// Answers `query` in the conversation `session` (null: a conversation of its own, forgotten after).
export type Ask = (session: string | null, query: string) => AsyncIterable<AgentEvent>;
