"""A ``dataspace worker`` with a test hook before each shard's storing step, for the fault tests.

    python -m tests.integration.jobs_shard_worker MARKER_DIR HANG_SECONDS

Settings come from the environment, as for ``dataspace worker``. Before storing a shard it creates
``MARKER_DIR/<job>-<shard>`` and sleeps HANG_SECONDS (the kill test kills it there with SIGKILL; the broker
restart test uses a short sleep so the job spans the restart).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dataspace.context import Context
from dataspace.jobs.queue import serve
from dataspace.logging import configure
from dataspace.settings import Settings


def main() -> None:
    marker_dir, hang = Path(sys.argv[1]), float(sys.argv[2])
    settings = Settings()
    configure(settings.log_level)
    ctx = Context.open(settings)

    def hook(job_id: int, index: int) -> None:
        (marker_dir / f"{job_id}-{index}").write_text("storing")
        time.sleep(hang)

    serve(ctx.jobs, threads=1, before_store=hook)


if __name__ == "__main__":
    main()
