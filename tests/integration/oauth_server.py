"""A real server for OAuth flow tests: uvicorn on 127.0.0.1 with a free port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from dataspace.app import create_app
from dataspace.context import Context


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(ctx: Context) -> Iterator[tuple[str, Context]]:
    """Serve ``ctx`` (with its issuer set to the server's address); yields (base URL, context)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    served = Context(settings=ctx.settings.model_copy(update={"issuer": base}), db=ctx.db, keys=ctx.keys)
    config = uvicorn.Config(
        create_app(served),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws="none",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield base, served
    finally:
        server.should_exit = True
        thread.join(timeout=10)
