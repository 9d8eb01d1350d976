"""A private git repository over smart HTTP: `git http-backend` behind a server that demands a
token (HTTP Basic, user x-access-token, as GitHub takes it). Real git on both ends."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class PrivateGitServer:
    def __init__(self, root: Path, token: str = "", accepts: Callable[[str], bool] | None = None):
        """Lets through requests with `token`, or with any token `accepts` (e.g. a GitHub App's
        installation tokens that have not expired)."""
        self.root = root
        accepts = accepts or (lambda given: given == token)

        def authorised_header(header: str | None) -> bool:
            scheme, _, encoded = (header or "").partition(" ")
            try:
                user, _, given = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                return False
            return scheme == "Basic" and user == "x-access-token" and accepts(given)
        self.requests: list[tuple[str, bool]] = []  # (path, authorised)
        server = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body go out as two writes: with Nagle's algorithm the body would wait for
            # the client's delayed ACK (40 ms per request), as e2b-local's did.
            disable_nagle_algorithm = True

            def log_message(self, *_):  # keep test output clean
                pass

            def do_GET(self):
                self._serve()

            def do_POST(self):
                self._serve()

            def _serve(self):
                authorised = authorised_header(self.headers.get("Authorization"))
                server.requests.append((self.path, authorised))
                if not authorised:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="private"')
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {**os.environ, "GIT_PROJECT_ROOT": str(server.root), "GIT_HTTP_EXPORT_ALL": "1",
                       "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                       "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                       "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "REMOTE_USER": "x-access-token"}
                output = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
                head, _, payload = output.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode().split("\r\n"):
                    name, _, value = line.partition(": ")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def hang(self) -> None:
        """Stop answering but keep the socket listening: clients connect, then wait forever."""
        self.httpd.shutdown()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()  # connections are refused from now on
