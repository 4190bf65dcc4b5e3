"""A stand-in for the worker, run by real supervisors in tests (MAIL_PROXY_WORKER_ARGV).

``python worker_stub.py PORT MODE`` answers ``/health`` on PORT, drains on SIGTERM and
leaves when its supervisor does. MODE is ``ok``, ``crash`` (exits 3 at once), ``stubborn``
(ignores SIGTERM) or ``lingering`` (serves on for 10 s after its supervisor is gone, as a
real worker drains). What it prints goes to the worker log the tests read.
"""

from __future__ import annotations

import http.server
import os
import signal
import sys
import threading
import time
from typing import Any


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"ok": true, "status": "ok"}')

    def log_message(self, *args: Any) -> None:
        pass


def watch_parent(parent: int, linger: float) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    time.sleep(linger)
    os._exit(0)


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "crash":
        print("stub: crashing", flush=True)
        sys.exit(3)
    server = http.server.HTTPServer(("127.0.0.1", port), Health)

    def on_term(signum: int, _frame: Any) -> None:
        print(f"stub: got signal {signum}, draining", flush=True)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else on_term)
    linger = 10.0 if mode == "lingering" else 0.0
    threading.Thread(target=watch_parent, args=(os.getppid(), linger), daemon=True).start()
    print(f"stub: serving on {port} for {os.environ.get('MAIL_PROXY_SUPERVISOR_PID')}",
          flush=True)
    server.serve_forever()
    print("stub: drained", flush=True)


if __name__ == "__main__":
    main()
