"""A threaded HTTP server on a free loopback port, for the tests' stand-ins of remote services
(Slack, PagerDuty, Airbyte): each owns one and answers its requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LoopbackHTTP:
    """Serves ``methods`` on 127.0.0.1 by calling ``handle`` with each request's handler."""

    def __init__(
        self,
        handle: Callable[[BaseHTTPRequestHandler], None],
        name: str,
        methods: Sequence[str] = ("GET", "POST"),
    ) -> None:
        self._handle = handle
        self._name = name
        self._methods = tuple(methods)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> int:
        """Start serving (once) and return the port."""
        if self._server is not None:
            return self.port
        handle = self._handle

        def answer(handler: BaseHTTPRequestHandler) -> None:
            handle(handler)

        def quiet(handler: BaseHTTPRequestHandler, format: str, *args: Any) -> None:
            """Keep the test output quiet; the servers record requests instead."""

        handler = type(
            "Handler",
            (BaseHTTPRequestHandler,),
            {"log_message": quiet, **{f"do_{m}": answer for m in self._methods}},
        )
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self._name}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
