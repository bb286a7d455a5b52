"""Connections a slow or hostile client cannot hold: uvicorn's HTTP/1.1 protocol (h11) with
deadlines and a cap.

- A request's header must arrive within `header_timeout` seconds of the connection opening (or of
  the previous response on a kept-alive connection), its body within `body_timeout` seconds of
  the header; otherwise the connection is closed. uvicorn by itself waits forever for a client
  that sends one byte at a time (slowloris).
- At most `max_connections` are open: past that, the oldest connection still sending its
  header (then, if none, the oldest still sending its body) is closed to make room (a flood of
  idle sockets must not lock out the next real user; refusing the newest would). A connection
  whose request is being answered is never dropped.

    uvicorn.Config(app, http=guarded_protocol(header_timeout=10, body_timeout=60, max_connections=200))
"""
from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS = 200


class _Guard:
    """One server's open connections by phase, each queue oldest first, and those dropped whose
    connection_lost has not come yet (still in uvicorn's set, no longer held)."""

    def __init__(self) -> None:
        self.header: dict = {}
        self.body: dict = {}
        self.closing: set = set()

    def leave(self, conn) -> None:
        self.header.pop(conn, None)
        self.body.pop(conn, None)


class GuardedH11Protocol(H11Protocol):
    """H11Protocol with a deadline per phase of a request and a cap on open connections (the
    class attributes; `guarded_protocol` makes a subclass with other values)."""

    header_timeout = DEFAULT_HEADER_TIMEOUT
    body_timeout = DEFAULT_BODY_TIMEOUT
    max_connections = DEFAULT_MAX_CONNECTIONS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = "header"
        super().connection_made(transport)
        # The server's connections in two queues by phase, oldest first (dicts keep insertion order),
        # and those dropped but not yet lost: a burst of N connections costs O(N), not O(N^2).
        guard = self._guard = self.server_state.__dict__.setdefault("_guard", _Guard())
        guard.header[self] = None
        if len(self.connections) - len(guard.closing) > self.max_connections:
            victim = next(iter(c for c in guard.header if c is not self), None) or next(iter(guard.body), None)
            if victim is not None:  # the oldest still sending its header goes first, then the oldest body
                victim.drop()
            else:  # every other connection is being answered: this one waits its turn elsewhere
                self.drop()
                return
        self._arm(self.header_timeout)

    def _arm(self, seconds: float | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, self.drop) if seconds is not None else None

    def drop(self) -> None:
        """Close the connection now (a deadline passed, or room is needed)."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._guard.leave(self)
        if not self.transport.is_closing():
            self.transport.close()
            self._guard.closing.add(self)

    def _follow(self) -> None:
        """Move the deadline on with the client's side of the request: header, body, answered."""
        state = self.conn.their_state
        if state is h11.IDLE:
            phase = "header"
        elif state is h11.SEND_BODY:
            phase = "body"
        else:  # DONE, MUST_CLOSE, CLOSED, ERROR: the request is in, the answer is ours to give
            phase = "answer"
        if phase == self._phase:
            return
        self._guard.leave(self)
        if phase in ("header", "body") and not self.transport.is_closing():
            getattr(self._guard, phase)[self] = None  # at the end: the newest of its phase
        self._phase = phase
        self._arm(self.header_timeout if phase == "header" else self.body_timeout if phase == "body" else None)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:  # kept alive: the next request's header has its deadline
            self._phase = None  # type: ignore[assignment]
            self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._guard.leave(self)
        self._guard.closing.discard(self)
        super().connection_lost(exc)


def guarded_protocol(header_timeout: float = DEFAULT_HEADER_TIMEOUT, body_timeout: float = DEFAULT_BODY_TIMEOUT,
                     max_connections: int = DEFAULT_MAX_CONNECTIONS) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with these limits, for uvicorn's `http=`."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout,
                                                               "body_timeout": body_timeout,
                                                               "max_connections": max_connections})
