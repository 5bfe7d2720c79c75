"""Free TCP ports on loopback."""

from __future__ import annotations

import socket
from contextlib import ExitStack


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick); free until someone else takes it."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on now. All are held until the last is picked: picked
    one at a time, the kernel may hand out a just-released port again (a server then found its HTTP
    and gRPC ports equal and failed to bind)."""
    with ExitStack() as held:
        ports = []
        for _ in range(count):
            probe = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
        return ports
