// The resident mode (docs/resident-protocol.md): a long-lived HTTP server on
// 127.0.0.1:$AGENT_SERVER_PORT that keeps each session's conversation in memory.
//   GET  /healthz -> {"pid": N, "answered": M}   (M: queries answered by this process)
//   POST /query {"task", "session", "query"} -> application/x-ndjson:
//        {"event":"progress","text":...}* then one {"event":"answer","text":...} or {"event":"error","message":...}
// Queries of one session run one after the other (a conversation has an order); sessions run in parallel.
import type { Ask } from "./events.ts";
import { oneLine } from "./oneshot.ts";

type QueryRequest = { task?: string; session?: string | null; query?: string };

export function serveResident(ask: Ask, port = Number(process.env.AGENT_SERVER_PORT || 8765)) {
  let answered = 0;
  const sessionTails = new Map<string, Promise<void>>();

  async function* answer(request: QueryRequest): AsyncGenerator<object> {
    if (!request.query) {
      yield { event: "error", message: "the request has no query" };
      return;
    }
    try {
      for await (const event of ask(request.session ?? null, request.query)) {
        if (event.type === "progress") yield { event: "progress", text: oneLine(event.text) };
        else {
          answered++;
          yield { event: "answer", text: event.text };
          return;
        }
      }
      yield { event: "error", message: "the agent ended without an answer" };
    } catch (error) {
      yield { event: "error", message: error instanceof Error ? error.message : String(error) };
    }
  }

  // Runs after the session's previous query (if any) has finished streaming.
  function inSessionOrder(session: string | null, body: (done: () => void) => void) {
    if (!session) return body(() => {});
    const previous = sessionTails.get(session) ?? Promise.resolve();
    let release!: () => void;
    const tail = new Promise<void>((resolve) => (release = resolve));
    sessionTails.set(session, tail);
    let released = false;
    previous.then(() => body(() => {
      if (released) return;
      released = true;
      release();
      if (sessionTails.get(session) === tail) sessionTails.delete(session);
    }));
  }

  return Bun.serve({
    hostname: "127.0.0.1",
    port,
    idleTimeout: 0, // a research query may think for minutes between lines
    async fetch(req) {
      const path = new URL(req.url).pathname;
      if (req.method === "GET" && path === "/healthz") return Response.json({ pid: process.pid, answered });
      if (req.method !== "POST" || path !== "/query") return new Response("not found\n", { status: 404 });
      let request: QueryRequest;
      try {
        request = await req.json();
      } catch {
        return new Response("the body is not JSON\n", { status: 400 });
      }
      const encoder = new TextEncoder();
      let release = () => {};
      const stream = new ReadableStream({
        start(controller) {
          inSessionOrder(request.session ?? null, async (done) => {
            release = done;
            try {
              for await (const line of answer(request)) controller.enqueue(encoder.encode(`${JSON.stringify(line)}\n`));
            } catch {
              // The client went away: enqueue failed; stop answering.
            } finally {
              done();
              try {
                controller.close();
              } catch {
                // already closed by the client's disconnect
              }
            }
          });
        },
        // The client went away (a cancelled task): the session's next query need not wait for this one.
        cancel() {
          release();
        },
      });
      return new Response(stream, { headers: { "Content-Type": "application/x-ndjson" } });
    },
  });
}
