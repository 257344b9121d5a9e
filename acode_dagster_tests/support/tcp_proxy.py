"""A TCP proxy that can stall: it stops forwarding while keeping both sockets open.

That is the fault no socket option of the client notices: its kernel still sees a live peer that
acknowledges every packet and keepalive probe, only no byte of the server's answer arrives (a
hung middlebox, a NAT entry gone bad, a server frozen after accepting). A server that is killed
is a different fault, tested differently.

The proxy runs in a process of its own (:class:`ProxyProcess`): the Arrow reader holds the GIL
while it waits for the socket, so a proxy in the reader's process could not forward anything
while the reader waits for it. A test drives it with one-line commands.

One thread accepts; each connection gets one pumping thread per direction. A stalled connection
stops reading, so the kernel's buffers fill and the server is held back by TCP flow control,
as behind a real stall. A stall freezes the connections open at the time; connections made
afterwards flow, as a new connection around a broken path would.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

_CHUNK = 64 * 1024
_POLL_S = 0.05


@dataclass(eq=False)
class _Link:
    client: socket.socket
    server: socket.socket
    flowing: threading.Event = field(default_factory=threading.Event)
    pumps: int = 2
    """Pumps still running; the link is forgotten when both have ended."""


class StallingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        """The connections still open."""
        self._made = 0
        self._threads: list[threading.Thread] = []
        self._budget: int | None = None
        self._rate: float | None = None
        self._sent_at = time.monotonic()
        self.downstream_bytes = 0
        """Bytes of the server's answers forwarded to clients so far."""
        self._acceptor = threading.Thread(target=self._accept, name="proxy accept", daemon=True)
        self._acceptor.start()

    # ------------------------------------------------------------------ control

    @property
    def connections(self) -> int:
        """Connections made so far."""
        return self._made

    @property
    def stalled(self) -> int:
        """Open connections that are stalled."""
        with self._lock:
            return sum(1 for link in self._links if not link.flowing.is_set())

    def stall(self) -> None:
        with self._lock:
            self._freeze()

    def stall_after(self, downstream_bytes: int) -> None:
        """Stall the connections open once ``downstream_bytes`` more bytes of answers have been
        forwarded: a stream cut at a known point of it, not raced."""
        with self._lock:
            self._budget = downstream_bytes

    def resume(self) -> None:
        with self._lock:
            self._budget = None
            for link in self._links:
                link.flowing.set()

    def throttle(self, bytes_per_s: float | None) -> None:
        """Forward answers at most this fast (None: as fast as they come)."""
        with self._lock:
            self._rate = bytes_per_s
            self._sent_at = time.monotonic()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.flowing.set()
            for sock in (link.client, link.server):
                # shutdown first: it wakes a pump blocked in sendall, which close does not.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in [self._acceptor, *self._threads]:
            thread.join(timeout=5)

    def __enter__(self) -> StallingProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ forwarding

    def _freeze(self) -> None:
        self._budget = None
        for link in self._links:
            link.flowing.clear()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            link.flowing.set()
            with self._lock:
                self._links.append(link)
                self._made += 1
            for source, sink, downstream in ((client, server, False), (server, client, True)):
                thread = threading.Thread(
                    target=self._pump, args=(link, source, sink, downstream), daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket, down: bool) -> None:
        pending = b""
        while not self._closed.is_set():
            if not link.flowing.wait(_POLL_S):
                continue
            if not pending:
                # Blocking sockets, polled for reading: a send must wait for a slow reader (that
                # is the back pressure), never time out.
                try:
                    if not select.select([source], [], [], _POLL_S)[0]:
                        continue
                    pending = source.recv(_CHUNK)
                except (OSError, ValueError):
                    break  # closed (ValueError: select on a closed socket)
                if not pending:
                    break  # the peer closed its side: pass the close on
            part = self._allowed(link, pending) if down else pending
            if not part:
                continue
            try:
                sink.sendall(part)
            except OSError:
                break
            pending = pending[len(part) :]
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        self._pump_ended(link)

    def _pump_ended(self, link: _Link) -> None:
        with self._lock:
            link.pumps -= 1
            if link.pumps == 0 and link in self._links:
                self._links.remove(link)
                for sock in (link.client, link.server):
                    with contextlib.suppress(OSError):
                        sock.close()

    def _allowed(self, link: _Link, data: bytes) -> bytes:
        """The part of an answer that may go now: up to the stall point, at the rate allowed."""
        with self._lock:
            if not link.flowing.is_set():
                return b""
            part = data if self._budget is None else data[: self._budget]
            wait = 0.0
            if self._rate is not None:
                part = part[: max(1, int(self._rate * _POLL_S))]
                # This part goes once the parts before it are due at the rate.
                now = time.monotonic()
                due = max(self._sent_at, now)
                self._sent_at = due + len(part) / self._rate
                wait = due - now
            self.downstream_bytes += len(part)
            if self._budget is not None:
                self._budget -= len(part)
                if self._budget <= 0:
                    self._freeze()
                    # This part still goes: the stall is after it.
        if wait > 0:
            time.sleep(wait)
        return part


def main() -> None:
    """``python -m acode_dagster_tests.support.tcp_proxy HOST PORT``: prints its port, then
    obeys one command a line on stdin and answers each with its status line."""
    proxy = StallingProxy(sys.argv[1], int(sys.argv[2]))
    print(proxy.port, flush=True)
    for line in sys.stdin:
        command, *args = line.split() or [""]
        if command == "stall":
            proxy.stall()
        elif command == "stall_after":
            proxy.stall_after(int(args[0]))
        elif command == "resume":
            proxy.resume()
        elif command == "throttle":
            proxy.throttle(float(args[0]) if args[0] != "none" else None)
        print(f"{proxy.downstream_bytes} {proxy.connections} {proxy.stalled}", flush=True)
    proxy.close()


@dataclass(frozen=True)
class ProxyStatus:
    downstream_bytes: int
    connections: int
    stalled: int


class ProxyProcess:
    """A :class:`StallingProxy` in a child process, driven from the test."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "acode_dagster_tests.support.tcp_proxy",
                upstream_host,
                str(upstream_port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.port = int(self._process.stdout.readline())
        self._lock = threading.Lock()

    def _command(self, line: str) -> ProxyStatus:
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        with self._lock:
            process.stdin.write(line + "\n")
            process.stdin.flush()
            answer = process.stdout.readline().split()
        if len(answer) != 3:
            raise RuntimeError(f"the proxy did not answer {line!r} (it exited: {process.poll()})")
        return ProxyStatus(*(int(n) for n in answer))

    def status(self) -> ProxyStatus:
        return self._command("status")

    def stall(self) -> ProxyStatus:
        return self._command("stall")

    def stall_after(self, downstream_bytes: int) -> ProxyStatus:
        return self._command(f"stall_after {downstream_bytes}")

    def resume(self) -> ProxyStatus:
        return self._command("resume")

    def throttle(self, bytes_per_s: float | None) -> ProxyStatus:
        return self._command(f"throttle {'none' if bytes_per_s is None else bytes_per_s}")

    def close(self) -> None:
        process = self._process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def stalling_proxy(host: str, port: int) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(host, port)
    try:
        yield proxy
    finally:
        proxy.close()


if __name__ == "__main__":
    main()
