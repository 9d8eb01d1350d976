"""A tiny resident agent for the tests (docs/resident-protocol.md), committed into test repos
and run by python3 inside e2b-local sandboxes. It keeps everything in memory: a counter of the
queries it answered and, per session, the facts it was told. "remember X" stores X in the
session; "wait for PATH" answers once PATH exists in the sandbox (a task that runs until the
test lets it end); any other query is answered with what the session was told. Every answer is a JSON
object carrying the process's pid and counter, so tests can tell one process from another, and
the seconds it took (the agent's own time, for bench/sessions.py)."""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"count": 0, "sessions": {}}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, content_type, body):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/healthz":
            self.send_error(404)
            return
        self._send("application/json", json.dumps({"pid": os.getpid()}).encode())

    def do_POST(self):
        if self.path != "/query":
            self.send_error(404)
            return
        began = time.monotonic()
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        query, session = request["query"], request["session"] or ""
        if query.startswith("wait for "):
            while not os.path.exists(query.removeprefix("wait for ")):
                time.sleep(0.1)
        with lock:
            state["count"] += 1
            facts = state["sessions"].setdefault(session, [])
            if query.startswith("remember "):
                facts.append(query.removeprefix("remember "))
            answer = {"pid": os.getpid(), "count": state["count"], "session": session, "task": request["task"],
                      "facts": list(facts), "took_s": time.monotonic() - began}
        lines = [{"event": "progress", "text": f"thinking about {query!r}"},
                 {"event": "answer", "text": json.dumps(answer)}]
        self._send("application/x-ndjson", "".join(json.dumps(line) + "\n" for line in lines).encode())


ThreadingHTTPServer(("127.0.0.1", int(os.environ["AGENT_SERVER_PORT"])), Handler).serve_forever()
