"""The demo's independent witnesses: separate ``dataspace witness serve`` processes, each with its own key
and data directory (``<data_dir>/witnesses/<name>``), watching the demo's audit and usage logs. The server
is configured to submit its checkpoints to them and to publish checkpoints with both cosignatures."""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dataspace.context import Context
from dataspace.tlog import log as tlog
from dataspace.witness import WitnessState


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_witnesses(ctx: Context, count: int) -> dict[str, str]:
    """Start ``count`` witness processes; returns the DATASPACE_WITNESS_* settings for the server."""
    exe = str(Path(sys.executable).parent / "dataspace")
    keys = tlog.verifier_keys(ctx.settings, ctx.keys)
    urls: list[str] = []
    vkeys: list[str] = []
    for i in range(1, count + 1):
        name = f"witness{i}.demo.invalid"  # .invalid: visibly not a real witness operator
        data_dir = ctx.settings.data_dir / "witnesses" / f"w{i}"
        state = WitnessState(data_dir, name)
        for log_name in tlog.LOGS:
            state.add_log(tlog.origin_for(ctx.settings.resolved_issuer, log_name), keys)
        port = _free_port()
        proc = subprocess.Popen(
            [exe, "witness", "serve", "--data-dir", str(data_dir), "--name", name, "--bind", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=open(data_dir / "witness.log", "ab"),  # noqa: SIM115  (lives as long as the process)
        )
        atexit.register(_stop, proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/key", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        urls.append(url)
        vkeys.append(state.cosigner.vkey)
    return {
        "DATASPACE_WITNESS_URLS": ",".join(urls),
        "DATASPACE_WITNESS_KEYS": ",".join(vkeys),
        "DATASPACE_WITNESS_QUORUM": str(count),
    }


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def configure(env: dict[str, str]) -> None:
    os.environ.update(env)
