"""A whole-body deadline for request bodies, so a slow client cannot hold a worker thread.

    watcher = BodyWatcher(timeout=20.0, min_rate=500)
    deadline = watcher.watch(client_socket)
    ... deadline.received(len(data)) after each read; deadline.expired after a failed one ...
    watcher.release(deadline)

`[proxy] read_timeout` bounds each recv, so a body trickled one byte every
few seconds never trips it. This bounds the whole body the way Apache's
mod_reqtimeout does (`body=20,MinRate=500`, its defaults): `timeout`
seconds, plus one more for every `min_rate` bytes received, so a large
upload at any sensible speed is never cut. The server reads a body in
blocks (gunicorn waits for a whole block), so the check cannot run between
reads: one thread per watcher wakes every half second and shuts the reading
side of a late body's socket. The blocked read then returns, and the
forwarder answers 408 on the still-open writing side. Bytes count only once
their block is read, so blocks shrink while little time is left (`block`).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time

CHECK_INTERVAL = 0.5  # seconds between two looks at the watched bodies
MIN_BLOCK = 256  # the smallest read, however slow the body


class BodyDeadline:
    """When one request body must be complete; pushed back as its bytes arrive."""

    __slots__ = ("ends", "expired", "min_rate", "received_bytes", "sock", "started")

    def __init__(self, sock: socket.socket | None, timeout: float, min_rate: int) -> None:
        self.sock = sock
        self.started = time.monotonic()
        self.ends = self.started + timeout
        self.min_rate = min_rate
        self.received_bytes = 0
        self.expired = False

    def block(self, limit: int) -> int:
        """How much to read next: a body read in blocks is credited only as each one completes,
        so while little time is left, blocks small enough that a client at `min_rate` finishes
        one in half of it; at full speed, `limit`."""
        if not self.min_rate:
            return limit
        left = self.ends - time.monotonic()
        # Never past `limit`: a server may hand over the raw socket, where reading beyond
        # the body waits for bytes that never come.
        return min(limit, max(MIN_BLOCK, int(left * self.min_rate / 2)))

    def received(self, size: int) -> None:
        self.received_bytes += size
        if self.min_rate:
            self.ends += size / self.min_rate

    def complete(self) -> None:
        """The whole body is in: waiting for the upstream's answer is not the client's doing."""
        self.ends = math.inf

    def expire(self) -> None:
        """Stop the body: a read blocked on it returns at once (end of input)."""
        self.expired = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # the client is gone already


class BodyWatcher:
    """The bodies being read in this process, each cut at its deadline by one thread."""

    def __init__(self, timeout: float, min_rate: int) -> None:
        self.timeout = timeout
        self.min_rate = min_rate
        self._watched: set[BodyDeadline] = set()
        self._lock = threading.Lock()
        self._pid = 0

    def watch(self, sock: socket.socket | None) -> BodyDeadline:
        """Start the clock for one body read from `sock` (None: checked only when a read fails)."""
        deadline = BodyDeadline(sock, self.timeout, self.min_rate)
        with self._lock:
            if self._pid != os.getpid():
                # First body in this (possibly forked) process: its own thread, nothing inherited.
                self._pid = os.getpid()
                self._watched = set()
                threading.Thread(target=self._run, name="ory-wsgi-body", daemon=True).start()
            self._watched.add(deadline)
        return deadline

    def release(self, deadline: BodyDeadline) -> None:
        """The body was read (or given up on): its deadline no longer applies."""
        with self._lock:
            self._watched.discard(deadline)

    def _run(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(CHECK_INTERVAL)
            now = time.monotonic()
            with self._lock:
                late = [deadline for deadline in self._watched if deadline.ends <= now]
                self._watched.difference_update(late)
            for deadline in late:
                deadline.expire()
