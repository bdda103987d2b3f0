"""A consumer's webhook endpoint as its own process, for the at-least-once tests.

    python -m tests.integration.event_receiver PORT LOG MODE

Every POST is appended to LOG (one JSON line: the signature header and the body) and fsynced *before* the
answer. MODE ``ok`` answers 204; ``hang`` never answers (the test kills the process mid-delivery). Prints
``ready <port>`` once listening (PORT 0 picks a free port).
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def main() -> None:
    port, log, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with open(log, "a") as f:
                f.write(json.dumps({"sig": self.headers["dataspace-signature"], "body": body.decode()}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if mode == "hang":
                time.sleep(3600)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
