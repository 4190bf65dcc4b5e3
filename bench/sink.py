"""A minimal SMTP sink for benchmarks, run as its own process so it never shares an event
loop (or the GIL) with the program under test.

``python -m bench.sink PORT`` listens on 127.0.0.1:PORT, prints ``ready`` once bound, accepts
every message with ``250`` and prints ``count N`` on SIGTERM/SIGINT before exiting.
It understands exactly what the benchmarks send: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
"""

from __future__ import annotations

import asyncio
import sys

from bench.common import run, serve_until_stopped

GREETING = b"220 sink.bench ESMTP\r\n"
EHLO = b"250-sink.bench\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n"


class SinkProtocol(asyncio.Protocol):
    """Counts messages; parses only line starts and the end-of-data marker."""

    counter = [0]

    def __init__(self) -> None:
        self.buf = bytearray()
        self.in_data = False
        self.transport: asyncio.Transport | None = None  # duck-typed under uvloop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        self.transport = transport  # type: ignore[assignment]
        transport.write(GREETING)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        out: list[bytes] = []
        while True:
            if self.in_data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    # keep only a tail long enough to hold a split end marker
                    if len(self.buf) > 8:
                        del self.buf[:-4]
                    break
                del self.buf[:end + 5]
                self.in_data = False
                self.counter[0] += 1
                out.append(b"250 2.0.0 OK\r\n")
                continue
            eol = self.buf.find(b"\r\n")
            if eol < 0:
                break
            verb = bytes(self.buf[:4]).upper()
            del self.buf[:eol + 2]
            if verb in (b"EHLO", b"HELO"):
                out.append(EHLO)
            elif verb == b"DATA":
                self.in_data = True
                self.buf[:0] = b"\r\n"  # so an empty body still ends on CRLF.CRLF
                out.append(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                out.append(b"221 bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(b"250 OK\r\n")
        if out:
            self.transport.write(b"".join(out))


async def serve(port: int) -> int:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, host="127.0.0.1", port=port, backlog=1024)
    await serve_until_stopped(server)
    return SinkProtocol.counter[0]


def main() -> None:
    count = run(serve(int(sys.argv[1])))
    print(f"count {count}", flush=True)


if __name__ == "__main__":
    main()
