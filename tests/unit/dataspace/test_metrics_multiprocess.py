"""Prometheus multiprocess mode: what two processes counted is served as one sum by a third."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COUNT = """
from dataspace.observability import metrics
metrics.observe_request("/livez", "GET", 200, 0.01)
metrics.sandbox_failed("killed by signal SIGKILL")
"""
SCRAPE = """
from prometheus_client import generate_latest
from dataspace.http.metrics import registry_for
print(generate_latest(registry_for(None)).decode())
"""


def test_processes_sharing_a_multiproc_dir_are_scraped_as_one(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", COUNT], env=env, check=True)
    out = subprocess.run([sys.executable, "-c", SCRAPE], env=env, check=True, capture_output=True, text=True).stdout
    assert 'dataspace_http_requests_total{method="GET",route="/livez",status="200"} 2.0' in out
    assert 'dataspace_sandbox_failures_total{reason="killed by signal"} 2.0' in out  # no signal name: bounded
