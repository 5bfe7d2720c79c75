"""A do-nothing HTTP endpoint on loopback, to measure the load generator's own ceiling.

It runs in processes of its own (they must not share the client's GIL); several processes share
one port through SO_REUSEPORT and the kernel spreads the connections over them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
from typing import Any, Optional

from torchserve_perf.tools.loadgen.ports import free_port

START_TIMEOUT_S = 60.0

_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
          b"Connection: keep-alive\r\n\r\n{\"ok\":true}")


class _TrivialProtocol(asyncio.Protocol):
    """Answers every HTTP/1.1 request with a fixed 200, keep-alive; reads bodies by Content-Length."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport if isinstance(transport, asyncio.Transport) else None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            if self.transport is not None:
                self.transport.write(_REPLY)


def _serve(port: int, ready: Any) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_TrivialProtocol, "127.0.0.1", port, reuse_port=True)
        ready.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


class TrivialServer:
    """The trivial endpoint answered by ``processes`` processes sharing one port; ``url`` is its address."""

    def __init__(self, processes: int = 1) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        ready = context.Queue()
        port = free_port()
        self.processes = [context.Process(target=_serve, args=(port, ready), daemon=True)
                          for _ in range(max(1, processes))]
        for process in self.processes:
            process.start()
        try:
            for _ in self.processes:
                ready.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.stop()
            raise RuntimeError("the trivial endpoint did not start") from None
        self.url = f"http://127.0.0.1:{port}/"

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join(10)

    def __enter__(self) -> TrivialServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
