"""An aiohttp application served on a free loopback port from a background thread with its own
event loop, so that synchronous tests (and the processes they start) can reach it by `url`."""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, Self

from aiohttp import web


class BackgroundHttp:
    def __init__(self, make_app: Callable[[], web.Application], thread_name: str) -> None:
        self.url = ""
        self._make_app = make_app
        self._thread_name = thread_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Serve on 127.0.0.1:<free port>; returns the base URL."""
        ready = threading.Event()
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            runner = web.AppRunner(self._make_app(), access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=self._thread_name, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self._thread_name} did not start")
        return self.url

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop()
