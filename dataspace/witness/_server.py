"""The witness's HTTP interface (standard library only: a witness is a small program run by a third party).

- ``POST /add-checkpoint``: C2SP tlog-witness (200 cosignature lines; 409 ``text/x.tlog.size``; 404 unknown
  origin; 403 bad signature; 422 inconsistent; 400 malformed).
- ``GET /checkpoint?origin=<origin>``: the latest checkpoint it cosigned (with its cosignature), for monitors.
- ``POST /check``: gossip; the body is a checkpoint signed by the log that someone remembers. JSON answer
  ``{"verdict": "consistent" | "split-view" | "unknown-size" | "unknown-log", "witness_checkpoint": ...}``;
  a split view answers 409 and carries what the witness cosigned at that size (the evidence).
- ``GET /key``: the witness's verifier key.
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from dataspace.witness._state import WitnessRefusal, WitnessState
from transparency.note import CheckpointError

log = logging.getLogger("dataspace.witness")
_MAX_BODY = 64 * 1024


def make_server(state: WitnessState, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dataspace-witness"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: str, ctype: str = "text/plain; charset=utf-8") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes | None:
            try:
                n = int(self.headers.get("Content-Length", ""))
            except ValueError:
                n = -1
            if not 0 <= n <= _MAX_BODY:
                self._send(400, "bad request\n")
                return None
            return self.rfile.read(n)

        def do_POST(self) -> None:
            path = urlparse(self.path).path
            body = self._body()
            if body is None:
                return
            if path == "/add-checkpoint":
                try:
                    line = state.add_checkpoint(body)
                except WitnessRefusal as exc:
                    log.warning("refused a checkpoint: %s (%d)", exc.reason, exc.status)
                    if exc.status == 409:
                        self._send(409, f"{exc.size}\n", "text/x.tlog.size")
                    else:
                        self._send(exc.status, exc.reason + "\n")
                    return
                self._send(200, line)
            elif path == "/check":
                try:
                    v = state.check(body.decode("utf-8"))
                except (CheckpointError, UnicodeDecodeError):
                    self._send(403, "not a checkpoint signed by a log this witness watches\n")
                    return
                status = 409 if v.verdict == "split-view" else 200
                out = {"verdict": v.verdict, "witness": state.cosigner.vkey, "witness_checkpoint": v.witness_note}
                self._send(status, json.dumps(out), "application/json")
            else:
                self._send(404, "not found\n")

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/key":
                self._send(200, state.cosigner.vkey + "\n")
            elif url.path == "/checkpoint":
                origin = parse_qs(url.query).get("origin", [""])[0]
                note = state.latest(origin)
                if note is None:
                    self._send(404, "nothing cosigned for that origin\n")
                else:
                    self._send(200, note)
            else:
                self._send(404, "not found\n")

    return ThreadingHTTPServer((host, port), Handler)
