"""Subprocess for the crash test: runs one job and stops dead (SIGKILL from the test) before storing.

    python -m tests.integration.jobs_crash_worker DATABASE_URL KEY_FILE JOB_ID MARKER_FILE

It prints nothing itself; when the job reaches the storing step it creates MARKER_FILE and sleeps, so the
test kills it at a point where the sandbox has run and nothing has been stored.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dataspace.context import Context
from dataspace.db import Database
from dataspace.keys import load_key_file
from dataspace.settings import Settings


def main() -> None:
    url, key_file, job_id, marker = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    settings = Settings(database_url=url, data_dir=key_file.parent)  # the test's epoch key store too
    ctx = Context(settings=settings, db=Database(url), keys=load_key_file(key_file))

    def hang(_job_id: int, _index: int) -> None:
        marker.write_text("storing")
        time.sleep(120)  # the test kills us here

    ctx.jobs.run_job(job_id, before_store=hang, heartbeat_seconds=0.2)


if __name__ == "__main__":
    main()
