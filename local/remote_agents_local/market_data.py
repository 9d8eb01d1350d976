"""A stand-in for a financial-data API (what Dexter reads from Financial Datasets): fixed, deterministic
prices as JSON, for the research-demo agent's one tool in tests and `remote-agents up`.

    GET /prices/ACME  ->  {"ticker": "ACME", "close": 123.45, "currency": "USD", "date": "2026-11-30"}

`python -m remote_agents_local.market_data --port P`; every request is counted (GET /_requests)."""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRICES = {"ACME": 123.45, "GLOBEX": 87.2, "INITECH": 12.5}
AS_OF = "2026-11-30"


class _Handler(BaseHTTPRequestHandler):
    served: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = self.path.strip("/").split("/")
        if parts == ["_requests"]:
            return self._json(200, self.served)
        if len(parts) == 2 and parts[0] == "prices":
            self.served.append(self.path)
            ticker = parts[1].upper()
            if ticker in PRICES:
                return self._json(200, {"ticker": ticker, "close": PRICES[ticker], "currency": "USD", "date": AS_OF})
            return self._json(404, {"error": f"unknown ticker {ticker}"})
        return self._json(404, {"error": "not found"})

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="market-data", description="fixed stock prices as JSON")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args(argv)
    ThreadingHTTPServer((args.host, args.port), _Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
