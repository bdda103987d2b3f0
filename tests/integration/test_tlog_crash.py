"""kill -9 during batch appends and sequencing: nothing acknowledged is lost, nothing is duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from dataspace.context import Context
from dataspace.keys import save_key_file
from dataspace.tlog.log import latest_checkpoint, root_at, sequence, verifier_keys
from dataspace.tlog.models import TLogCheckpoint, TLogEntry
from transparency import merkle
from transparency.note import open_checkpoint

BATCH = 300

CHILD = """
import sys
from pathlib import Path
from dataspace.audit import record_event
from dataspace.context import Context
from dataspace.db import Database
from dataspace.keys import load_key_file
from dataspace.settings import Settings
from dataspace.tlog.log import sequence

url, batch, key_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = Context(settings=Settings(database_url=url), db=Database(url), keys=load_key_file(Path(key_file)))

b = 0
while True:
    with ctx.db.transaction() as s:
        for i in range(batch):
            record_event(s, actor=None, action="crash.test", target=f"b{b}-{i}")
    print(f"ack {b}", flush=True)  # acknowledged only after the commit returned
    b += 1
    # Appends and sequencing alternate, so the kill hits either.
    sequence(ctx.settings, ctx.db, ctx.keys, "audit", limit=500)
"""


def test_kill_9_loses_nothing_acknowledged_and_duplicates_nothing(ctx: Context, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    key_file = tmp_path / "keys.json"
    save_key_file(key_file, ctx.keys)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(script), ctx.db.url, str(BATCH), str(key_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(acked) < 8 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(int(line.split()[1]))
        time.sleep(0.01)  # land somewhere inside the next batch / sequencing transaction
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    acked += [int(x.split()[1]) for x in out.splitlines() if x.startswith("ack ")]
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 8, err[-2000:]

    result = sequence(ctx.settings, ctx.db, ctx.keys, "audit")
    with ctx.db.session() as s:
        rows = s.execute(
            select(TLogEntry.idx, TLogEntry.entry, TLogEntry.leaf_hash)
            .where(TLogEntry.log == "audit")
            .order_by(TLogEntry.idx)
        ).all()
        child_checkpoints = s.execute(
            select(TLogCheckpoint.size, TLogCheckpoint.root_hash).where(TLogCheckpoint.log == "audit")
        ).all()
        for size, root in child_checkpoints:  # every earlier checkpoint is a prefix of today's tree
            assert root_at(s, log="audit", size=size) == bytes(root)
        cp = latest_checkpoint(s, log="audit")
    assert [r[0] for r in rows] == list(range(len(rows)))  # all sequenced, contiguous
    targets = [json.loads(r[1])["target"] for r in rows]
    assert len(targets) == len(set(targets))  # no duplicates
    present = set(targets)
    for b in acked:
        assert all(f"b{b}-{i}" in present for i in range(BATCH)), f"acknowledged batch {b} lost"
    # whole batches only: a batch is in the log entirely or not at all
    batches = {t.split("-")[0] for t in targets}
    assert len(targets) == BATCH * len(batches)
    assert cp is not None
    assert cp.size == result.size == len(rows)
    assert open_checkpoint(cp.note, verifier_keys(ctx.settings, ctx.keys)).root_hash == merkle.root_from_leaf_hashes(
        [bytes(r[2]) for r in rows]
    )
    assert len(child_checkpoints) >= 7  # the child sequenced (and signed) before it was killed
