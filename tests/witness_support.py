"""Witnesses as separate processes (``dataspace witness serve``), each with its own key and data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dataspace.witness import WitnessState

DATASPACE = str(Path(sys.executable).parent / "dataspace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WitnessProcess:
    name: str
    data_dir: Path
    logs: dict[str, list[str]]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def vkey(self) -> str:
        return WitnessState(self.data_dir, self.name).cosigner.vkey

    def start(self) -> WitnessProcess:
        state = WitnessState(self.data_dir, self.name)
        for origin, keys in self.logs.items():
            state.add_log(origin, keys)
        args = [DATASPACE, "witness", "serve", "--data-dir", str(self.data_dir), "--name", self.name]
        args += ["--bind", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/key", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("witness exited")
            time.sleep(0.1)
        raise RuntimeError("witness did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # a crash, not a clean stop: state must survive it
            self.proc.wait(timeout=30)
        self.proc = None
