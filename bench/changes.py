"""Consent changes in-process, without HTTP: what one change costs the server in CPU and SQL statements.

    .venv/bin/python bench/changes.py --n 400 --changes 4000 --batch 8

Sets up a fresh database like ``bench/load.py`` (default: a new PostgreSQL database on 127.0.0.1, dropped
afterwards), then grants and withdraws random (field, purpose, partner) scopes of random customers through
the context's group committer, ``--batch`` changes submitted together (as concurrent requests would be), and
prints per change: wall time, this process's CPU time, statements executed through SQLAlchemy (a batch's
held-back rows go to the driver directly and are not counted), PostgreSQL's CPU, and the batches run.
``BENCH_SQL=1`` also lists the statements.
``--batch 1`` is the cost of a change on an idle server.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _report  # noqa: E402
from load import bench_database, postgres_cpu, setup  # noqa: E402

from dataspace.bootstrap import init  # noqa: E402
from dataspace.consents import changes as consent_changes  # noqa: E402
from dataspace.context import Context  # noqa: E402
from dataspace.principal import Principal  # noqa: E402
from dataspace.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="customers")
    parser.add_argument("--changes", type=int, default=4000, help="consent changes (half grants, half withdrawals)")
    parser.add_argument("--batch", type=int, default=8, help="changes submitted together")
    parser.add_argument("--database-url", default=None, help="default: a fresh PostgreSQL database, dropped after")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dataspace-changes-"))
    with bench_database(args.database_url, "dataspace_changes") as url:
        try:
            settings = Settings(data_dir=tmp, database_url=url, issuer="http://127.0.0.1:1")
            init(settings)
            ctx = Context.open(settings)
            customers, scopes = setup(ctx, args.n)
            statements = 0

            seen: dict[str, int] = {}

            def count(_c: object, _cur: object, sql: str, *_: object) -> None:
                nonlocal statements
                statements += 1
                head = " ".join(sql.split())[:110]
                seen[head] = seen.get(head, 0) + 1

            event.listen(ctx.db.engine, "before_cursor_execute", count)
            rng = random.Random(7)
            signer = ctx.keys.signing_key
            pairs = args.changes // 2
            wall = cpu = 0.0
            pg_before = postgres_cpu()
            done = 0
            while done < pairs:
                k = min(args.batch, pairs - done)
                # k different customers, so no two changes of one batch touch the same grant
                who = rng.sample(customers, k)
                grants = []
                for c in who:
                    f, p, partner = rng.choice(scopes)
                    actor = Principal(
                        subject=f"bench-{c.subject_id}", role="customer", client_id="bench", subject_id=c.subject_id
                    )
                    req = consent_changes.GrantRequest(field=f, purpose=p, partner=partner)
                    grants.append((c.subject_id, actor, req))
                t0, c0 = time.perf_counter(), time.process_time()
                futures = [
                    ctx.writes.submit(
                        lambda s, sid=sid, actor=actor, req=req: (
                            consent_changes.grant(s, subject_id=sid, request=req, signer=signer, actor=actor).grant.id
                        )
                    )
                    for sid, actor, req in grants
                ]
                ids = [f.result() for f in futures]
                futures = [
                    ctx.writes.submit(
                        lambda s, sid=sid, actor=actor, gid=gid: (
                            consent_changes.withdraw(
                                s, subject_id=sid, grant_id=gid, signer=signer, actor=actor
                            ).changed
                        )
                    )
                    for (sid, actor, _), gid in zip(grants, ids, strict=True)
                ]
                [f.result() for f in futures]
                wall += time.perf_counter() - t0
                cpu += time.process_time() - c0
                done += k
            n = 2 * done
            pg = postgres_cpu() - pg_before
            w = ctx.writes
            print(
                f"backend {ctx.db.engine.dialect.name}, batch {args.batch}: {n} changes, "
                f"{wall / n * 1000:.2f} ms wall, {cpu / n * 1000:.2f} ms CPU, "
                f"{statements / n:.1f} statements through SQLAlchemy per change (plus the batches' raw inserts); "
                f"{w.batches} batches ({w.items / max(w.batches, 1):.1f} changes each), {w.reruns} reruns; "
                f"{n / wall:.0f} changes/s on one thread"
            )
            if ctx.db.engine.dialect.name == "postgresql":  # on this machine
                print(f"PostgreSQL (all its processes on this machine): {pg / n * 1000:.2f} ms CPU per change")
            if os.environ.get("BENCH_SQL"):
                for head, c in sorted(seen.items(), key=lambda kv: -kv[1])[:25]:
                    print(f"{c / n:6.2f}  {head}")
            ctx.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _report.peak_rss()


if __name__ == "__main__":
    main()
