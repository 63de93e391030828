"""Kernel-level wake-ups for sleeping consumers, across processes that only share a ring name.

A consumer using ``BlockingWait`` binds a datagram Unix socket in Linux's *abstract*
namespace (the address starts with a NUL byte), derived from the ring name and its index.
The producer sends one byte there when it publishes while the consumer's wake flag is up.
Why this and not eventfd or futex: an eventfd must be inherited or passed over a socket,
which spawned processes that attach by name cannot do; a futex on the segment needs a raw
syscall Python does not expose. Abstract sockets need no file (nothing can leak in /dev/shm
or /tmp), vanish when their process dies (even on SIGKILL), and a send to a dead consumer
fails at once with ``ConnectionRefusedError`` instead of queueing.
"""

from __future__ import annotations

import select
import socket

import numpy as np

from .layout import consumer_wake_word


def wake_address(ring_name: str, index: int) -> bytes:
    """Return the abstract socket address of consumer ``index`` of ring ``ring_name``."""
    return b"\0aegis-ring/" + ring_name.encode() + b"/" + str(index).encode()


class WakeListener:
    """The consumer's end: sleep in the kernel until a producer sends a wake-up."""

    def __init__(self, ring_name: str, index: int) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(wake_address(ring_name, index))
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)

    def sleep(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s``; return True when woken, after draining pending wake-ups."""
        if not self._poll.poll(max(0, int(timeout_s * 1000) + 1)):
            return False
        self.drain()
        return True

    def fileno(self) -> int:
        """The socket's descriptor, for an event loop's reader."""
        return self._sock.fileno()

    def drain(self) -> None:
        """Drop every queued wake-up."""
        try:
            while True:
                self._sock.recv(64)
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._sock.close()


class WakeSender:
    """The waking end (a producer, or a consumer that others read after): one unbound datagram
    socket, the address of every consumer, and the ring's meta words holding their wake flags."""

    def __init__(self, ring_name: str, consumers: int, meta: np.ndarray) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._addresses = [wake_address(ring_name, i) for i in range(consumers)]
        self._meta = meta

    def wake(self, mask: int) -> int:
        """Send a wake-up to every consumer in ``mask``; return the mask of those not listening.

        A consumer that died asleep has its flag lowered here, so nobody pays a system call per
        publish or commit for it again."""
        gone = 0
        index = 0
        while mask:
            if mask & 1:
                try:
                    self._sock.sendto(b"\1", self._addresses[index])
                except BlockingIOError:
                    pass  # its queue is full of wake-ups already: it will wake
                except (ConnectionRefusedError, FileNotFoundError):
                    gone |= 1 << index
                    self._meta[consumer_wake_word(index)] = 0
            mask >>= 1
            index += 1
        return gone

    def close(self) -> None:
        self._sock.close()
