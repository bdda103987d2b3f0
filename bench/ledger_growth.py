"""Issue 18 item 3: the same job on a fresh ledger and on one already holding millions of entries (PostgreSQL).

    .venv/bin/python bench/ledger_growth.py --n 50000 --prefill 2000000        # quick (about 2 minutes)
    .venv/bin/python bench/ledger_growth.py --n 1000000 --prefill 20000000     # target: prefilled <= 1.15x fresh

Two PostgreSQL databases of its own (created on the server of ``DATASPACE_BENCH_POSTGRES_URL``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``; dropped at the end unless ``--keep``), each set up
as ``bench/jobs.py`` sets up its own (``generate``: N sealed profiles + grants by COPY; ``prepare_job``:
contract, model, job):

* **fresh**: the ledger holds only the set-up's audit entries;
* **prefilled**: ``--prefill`` usage entries added first, shaped as jobs write them (same canonical JSON, leaf
  hash SHA-256(0x00 || entry), action ``data.used``, subject_id, partner): one earlier job per block of N
  entries, each covering the population in subject order, a day apart. They are generated in SQL
  (``INSERT ... SELECT generate_series``) and sequenced by the project's sequencer
  (``dataspace.tlog.log.sequence``): in the default ``--sequencing numbered`` the INSERT writes each row's
  index itself (the per-row UPDATE would dominate the set-up) and leaves the first row queued, so
  ``sequence`` numbers that one row and then, as for every batch, reads all numbered leaves past the head in
  index order, builds the tree, stores the complete subtrees (``tlog_nodes``) and signs a checkpoint (up to
  5M entries the head's root is checked against the root of every leaf). ``--sequencing queued`` inserts
  every row queued and lets ``sequence`` number them in its batches of 100k (the production path; slow at 20M).

Then ``--rounds`` times, interleaved (fresh, prefilled, fresh, ...) so whatever else loads the shared machine
hits both sides: a new job of the same terms, run in a child process (its own peak RSS, VmHWM), then its
entries sequenced with ``sequence`` (the phase "sequence"). Before each job ``VACUUM (ANALYZE)`` and a
``CHECKPOINT``, so autovacuum and earlier dirty pages do not land inside the measured job. Each round adds a
job's ~0.95N entries (and decisions) to both databases.

Printed: each phase, median over rounds, prefilled / fresh (target <= 1.15x end to end); the per-subject usage
read (``usage_for_subject``, "how my data was used") and an inclusion proof of one of the subject's entries
(``usage_proof``), p50/p99 over ``--reads`` random subjects; per-relation blocks read outside shared buffers
and hit, and WAL bytes, during each job and each sequencing (``pg_statio_*``, ``pg_current_wal_lsn``); in
round 1, ``EXPLAIN (ANALYZE, BUFFERS)`` of the sequencer's queued-row scan and of the usage read, and (rolled
back) of a 100k-row ledger insert and of the sequencer's UPDATE numbering it; relation sizes; peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after ROOT: bench/sandbox.py must not shadow the sandbox package

import _report  # noqa: E402

PG_ADMIN_URL = os.environ.get("DATASPACE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TARGET = 1.15
PHASES = (
    "eligibility",
    "quantiles",
    "emission",
    "sandbox",
    "validation",
    "recheck",
    "store_decisions",
    "store_ledger",
    "storage",
    "points",
)


def _admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(sql))
    admin.dispose()


def _raw(url: str) -> Any:
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


# --- the child: one job run ---------------------------------------------------------------------------
def child(url: str, directory: Path, job_id: int) -> None:
    from dataspace.context import Context
    from dataspace.db import Database
    from dataspace.keys import load_key_file
    from dataspace.settings import Settings

    settings = Settings(database_url=url, data_dir=directory, epoch_dir=directory / "epochs")
    ctx = Context(settings=settings, db=Database(url), keys=load_key_file(directory / "keys.json"))
    t0 = time.perf_counter()
    result = ctx.jobs.run_job(job_id, credit_inline=False)
    total = time.perf_counter() - t0
    rss = _report.proc_peak_kib(os.getpid())  # VmHWM: ru_maxrss would carry the forking parent's peak over exec
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = {
        "status": result.status,
        "error": result.error,
        "decisions": result.stats.get("decisions", 0),
        "seconds": total,
        "timings": result.timings,
        "rss_kib": rss,
        "children_rss_kib": kids,
    }
    print("RESULT " + json.dumps(out), flush=True)


# --- the parent ---------------------------------------------------------------------------------------
def run_job(url: str, directory: Path, job_id: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(job_id), "--url", url, "--dir", str(directory)],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    got: dict[str, Any] = json.loads(line[len("RESULT ") :])
    if got["status"] != "succeeded":
        raise SystemExit(f"job {job_id} ended {got['status']}: {got['error']}")
    return got


def io_snapshot(url: str) -> dict[str, Any]:
    """Per-relation heap/index block reads (not in shared buffers) and hits, and the WAL position."""
    with _raw(url) as conn:
        rows = conn.execute(
            "SELECT relname, coalesce(heap_blks_read, 0), coalesce(heap_blks_hit, 0) FROM pg_statio_user_tables "
            "UNION ALL SELECT indexrelname, coalesce(idx_blks_read, 0), coalesce(idx_blks_hit, 0) "
            "FROM pg_statio_user_indexes"
        ).fetchall()
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    return {"rel": {r[0]: (int(r[1]), int(r[2])) for r in rows}, "lsn": str(lsn)}


def io_delta(url: str, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    with _raw(url) as conn:
        wal = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (after["lsn"], before["lsn"])).fetchone()[0]  # type: ignore[index]
    rel = {}
    for name, (r1, h1) in after["rel"].items():
        r0, h0 = before["rel"].get(name, (0, 0))
        if r1 - r0 or h1 - h0:
            rel[name] = (r1 - r0, h1 - h0)
    return {"wal_bytes": int(wal), "rel": rel}


def settle(url: str) -> None:
    """VACUUM (ANALYZE) the tables the job touches and CHECKPOINT: neither lands inside a measured run."""
    with _raw(url) as conn:
        for table in ("tlog_entries", "tlog_nodes", "decisions", "consent_grants", "subject_profiles"):
            conn.execute(f"VACUUM (ANALYZE) {table}")
        conn.execute("CHECKPOINT")


def explain(url: str, label: str, subject: int) -> None:
    """The sequencer's scan for queued rows (as its UPDATE runs it, read-only here) and the usage read."""
    with _raw(url) as conn:
        for name, sql, params in (
            (
                "sequencer's queued-row scan",
                "EXPLAIN (ANALYZE, BUFFERS) SELECT id, row_number() OVER (ORDER BY id) AS rn FROM tlog_entries "
                "WHERE log = %s AND idx IS NULL ORDER BY id LIMIT 100000",
                ("usage",),
            ),
            (
                f"usage read of subject {subject}",
                "EXPLAIN (ANALYZE, BUFFERS) SELECT idx, entry FROM tlog_entries WHERE log = %s "
                "AND subject_id = %s::integer ORDER BY id DESC LIMIT 5000",
                ("usage", subject),
            ),
        ):
            plan = [r[0] for r in conn.execute(sql, params).fetchall()]
            print(f"  EXPLAIN {label}, {name}:")
            for ln in plan:
                print(f"    {ln}")


def sequence_usage(url: str, directory: Path) -> tuple[float, int, int]:
    from dataspace.db import Database
    from dataspace.keys import load_key_file
    from dataspace.settings import Settings
    from dataspace.tlog.log import sequence

    settings = Settings(database_url=url, data_dir=directory, epoch_dir=directory / "epochs")
    db = Database(url)
    keys = load_key_file(directory / "keys.json")
    try:
        sequence(settings, db, keys, "audit")
        t0 = time.perf_counter()
        res = sequence(settings, db, keys, "usage")
        return time.perf_counter() - t0, res.sequenced, res.size
    finally:
        db.dispose()


def reads(url: str, n: int, count: int, seed: int) -> dict[str, float]:
    """p50/p99 of ``usage_for_subject`` and of ``usage_proof`` (one of the subject's entries) over random
    subjects, on one pooled session each (as a request would)."""
    from dataspace.db import Database
    from dataspace.usage.service import usage_for_subject, usage_proof

    db = Database(url)
    rng = random.Random(seed)
    subjects = [rng.randint(1, n) for _ in range(count)]
    read_ms: list[float] = []
    proof_ms: list[float] = []
    uses = 0
    try:
        for sid in subjects[:20]:  # warm the pool and the prepared statements; not timed
            with db.session() as s:
                usage_for_subject(s, sid)
        for sid in subjects:
            with db.session() as s:
                t0 = time.perf_counter()
                got = usage_for_subject(s, sid)
                read_ms.append((time.perf_counter() - t0) * 1000)
            indexes = [u.index for f in got for u in f.uses if u.index is not None]
            uses += len({u.index for f in got for u in f.uses})
            if indexes:
                with db.session() as s:
                    t0 = time.perf_counter()
                    usage_proof(s, subject_id=sid, index=rng.choice(indexes))
                    proof_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        db.dispose()

    def pct(xs: list[float], q: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    return {
        "read_p50": statistics.median(read_ms),
        "read_p99": pct(read_ms, 0.99),
        "proof_p50": statistics.median(proof_ms) if proof_ms else float("nan"),
        "proof_p99": pct(proof_ms, 0.99),
        "uses_per_subject": uses / len(subjects),
    }


def prefill(url: str, directory: Path, n: int, count: int, mode: str) -> None:
    """``count`` usage entries shaped as a job's (one earlier job per block of ``n`` subjects), generated in
    SQL, then sequenced by ``dataspace.tlog.log.sequence`` (see the module's docstring for ``mode``)."""
    from dataspace.db import Database
    from dataspace.keys import load_key_file
    from dataspace.settings import Settings
    from dataspace.tlog.log import sequence

    with _raw(url) as conn:
        base = conn.execute("SELECT coalesce(max(size), 0) FROM tlog_heads WHERE log = 'usage'").fetchone()[0]  # type: ignore[index]
        queued = conn.execute("SELECT count(*) FROM tlog_entries WHERE log = 'usage' AND idx IS NULL").fetchone()[0]  # type: ignore[index]
        assert queued == 0, "sequence the usage log before prefilling"
    # The body as append_job_usage renders it (keys sorted); job ids far above the bench's own, a day apart.
    entry = (
        """'{"decision":"' || (CASE WHEN (g * 7919) %% 10 < 6 THEN 'standard' ELSE 'premium' END) || """
        """'","fields":["age","balance","income"],"job_id":' || (1000000 + g / %(n)s) || """
        """',"partner":"bench_insurer","purpose":"bench_offer","subject_id":' || (1 + g %% %(n)s) || """
        """',"time":"' || to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"}'"""
    )
    idx = "NULL" if mode == "queued" else "CASE WHEN g = 0 THEN NULL ELSE %(base)s + g END"
    chunk = 2_000_000
    t0 = time.perf_counter()
    with _raw(url) as conn:
        for lo in range(0, count, chunk):
            hi = min(count, lo + chunk) - 1
            conn.execute(
                "INSERT INTO tlog_entries (log, idx, entry, leaf_hash, created_at, action, actor, subject_id, "
                "partner) SELECT 'usage', " + idx + ", e, sha256('\\x00'::bytea || convert_to(e, 'UTF8')), t, "
                "'data.used', '', 1 + g %% %(n)s, 'bench_insurer' FROM ("
                "  SELECT g, t, " + entry + " AS e FROM ("
                "    SELECT g, now() - interval '1 day' * (%(blocks)s - g / %(n)s) AS t"
                "    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) AS s) AS r",
                {"n": n, "base": base, "lo": lo, "hi": hi, "blocks": (count + n - 1) // n + 1},
            )
            print(f"  prefill: {hi + 1:,} rows inserted, {time.perf_counter() - t0:.1f} s", flush=True)
    inserted = time.perf_counter() - t0
    settings = Settings(database_url=url, data_dir=directory, epoch_dir=directory / "epochs")
    db = Database(url)
    t0 = time.perf_counter()
    res = sequence(settings, db, load_key_file(directory / "keys.json"), "usage")
    sequenced = time.perf_counter() - t0
    db.dispose()
    assert res.size == base + count, (res.size, base, count)
    print(
        f"prefill: {count:,} usage entries inserted in {inserted:.1f} s ({count / inserted:,.0f}/s, SQL), sequenced "
        f"({mode}) in {sequenced:.1f} s ({count / sequenced:,.0f}/s) in {res.batches} batch(es); log size {res.size:,}",
        flush=True,
    )
    if count <= 5_000_000:  # check the stored tree against the leaves themselves
        from transparency import merkle

        with _raw(url) as conn:
            hashes = [
                bytes(h) for (h,) in conn.execute("SELECT leaf_hash FROM tlog_entries WHERE log = 'usage' ORDER BY idx")
            ]
            root = bytes(conn.execute("SELECT root_hash FROM tlog_heads WHERE log = 'usage'").fetchone()[0])  # type: ignore[index]
        assert merkle.root_from_leaf_hashes(hashes) == root, "prefilled tree's root differs from its leaves'"
        print("prefill: the head's root equals the root recomputed from every leaf", flush=True)


def sizes(url: str) -> list[tuple[str, int]]:
    with _raw(url) as conn:
        return [
            (str(name), int(size))
            for name, size in conn.execute(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i') "
                "AND (c.relname LIKE '%%tlog%%' OR c.relname LIKE '%%decisions%%') "
                "ORDER BY pg_relation_size(c.oid) DESC"
            ).fetchall()
        ]


def print_io(label: str, io: dict[str, Any]) -> None:
    top = sorted(io["rel"].items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:8]
    print(f"  {label}: WAL {io['wal_bytes'] / 2**20:,.0f} MiB; blocks read (outside shared buffers) / hit:")
    for name, (r, h) in top:
        print(f"    {name:<44} {r:>10,} / {h:>12,}")


def measure(
    url: str, directory: Path, job_id: int, n: int, reads_count: int, label: str, *, plans: bool
) -> dict[str, Any]:
    settle(url)
    before = io_snapshot(url)
    job = run_job(url, directory, job_id)
    job["io"] = io_delta(url, before, io_snapshot(url))
    if plans:
        explain(url, label, random.Random(1).randint(1, n))
    before = io_snapshot(url)
    seconds, count, size = sequence_usage(url, directory)
    job["sequence_io"] = io_delta(url, before, io_snapshot(url))
    job["timings"]["sequence"] = seconds
    with _raw(url) as conn:  # as autovacuum would soon after: the reads plan on current statistics
        conn.execute("ANALYZE tlog_entries")
        conn.execute("ANALYZE tlog_nodes")
    job["reads"] = reads(url, n, reads_count, seed=7)
    print(
        f"{label}: job {job_id} {job['seconds']:.2f} s for {job['decisions']:,} decisions; then sequenced {count:,} "
        f"entries in {seconds:.2f} s (log size {size:,}); usage read p50 {job['reads']['read_p50']:.2f} ms "
        f"({job['reads']['uses_per_subject']:.1f} uses per subject), proof p50 {job['reads']['proof_p50']:.2f} ms; "
        f"job process peak RSS {_report.mib(job['rss_kib'])}",
        flush=True,
    )
    print_io(f"{label} job I/O", job["io"])
    print_io(f"{label} sequencing I/O", job["sequence_io"])
    if plans:
        explain_writes(url, label, job_id)
    return job


def explain_writes(url: str, label: str, job_id: int) -> None:
    """In a transaction rolled back: 100k ledger rows like the job's (its own, copied queued, in its order)
    inserted, then numbered by the sequencer's UPDATE; EXPLAIN (ANALYZE, BUFFERS, WAL) of both."""
    conn = _raw(url)
    try:
        conn.autocommit = False
        for name, sql in (
            (
                "insert of 100k queued entries (the job's ledger write)",
                "EXPLAIN (ANALYZE, BUFFERS, WAL) INSERT INTO tlog_entries (log, idx, entry, leaf_hash, created_at, "
                "action, actor, subject_id, partner) SELECT log, NULL, entry, leaf_hash, created_at, action, actor, "
                "subject_id, partner FROM tlog_entries WHERE log = 'usage' AND idx >= (SELECT size FROM tlog_heads "
                "WHERE log = 'usage') - 100000 ORDER BY idx",
            ),
            (
                "sequencer's UPDATE numbering them",
                "EXPLAIN (ANALYZE, BUFFERS, WAL) UPDATE tlog_entries SET idx = 1000000000 + q.rn - 1 FROM ("
                " SELECT id, row_number() OVER (ORDER BY id) AS rn FROM tlog_entries"
                " WHERE log = 'usage' AND idx IS NULL ORDER BY id LIMIT 100000) AS q WHERE tlog_entries.id = q.id",
            ),
        ):
            plan = [r[0] for r in conn.execute(sql).fetchall()]
            print(f"  EXPLAIN {label} (rolled back), {name}:")
            for ln in plan:
                if "Buffers" in ln or "WAL" in ln or "Time" in ln or "actual" in ln:
                    print(f"    {ln.rstrip()}")
        conn.rollback()
    finally:
        conn.close()
    with _raw(url) as c:  # the rolled-back rows are dead tuples: gone before the next measurement
        c.execute("VACUUM tlog_entries")


def _median_ratio(fresh: list[dict[str, Any]], grown: list[dict[str, Any]], get: Any) -> tuple[float, float]:
    """(median over rounds of the fresh figure, the same of the prefilled one) for ``_report.compare``."""
    return statistics.median(get(g) for g in grown), statistics.median(get(f) for f in fresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="subjects (the job covers 95%% of them)")
    parser.add_argument("--prefill", type=int, default=20_000_000, help="usage entries in the prefilled database")
    parser.add_argument("--sequencing", choices=("numbered", "queued"), default="numbered")
    parser.add_argument("--rounds", type=int, default=2, help="fresh/prefilled job pairs, interleaved")
    parser.add_argument("--reads", type=int, default=300, help="random subjects for the usage read p50")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the databases (their URLs are printed)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.url, args.dir, args.child)
        return

    from bench.jobs import generate, prepare_job

    load = os.getloadavg()
    print(
        f"ledger growth: N = {args.n:,}, prefill {args.prefill:,} ({args.sequencing}), {args.rounds} round(s); load "
        f"average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; free disk "
        f"{shutil.disk_usage('/').free / 2**30:.0f} GiB",
        flush=True,
    )
    top = args.dir or Path(tempfile.mkdtemp(prefix="dataspace-ledger-growth-"))
    tag = uuid.uuid4().hex[:10]
    names = {"fresh": f"dataspace_ledger_growth_{tag}_fresh", "prefilled": f"dataspace_ledger_growth_{tag}_prefilled"}
    urls = {k: PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + v for k, v in names.items()}
    dirs = {k: top / k for k in names}
    runs: dict[str, list[dict[str, Any]]] = {"fresh": [], "prefilled": []}
    try:
        for kind in ("fresh", "prefilled"):  # the same set-up in both: profiles, grants, contract terms
            _admin(f'CREATE DATABASE "{names[kind]}"')
            print(f"database ({kind}): {names[kind]}", flush=True)
            generate(args.n, dirs[kind], urls[kind])
            sequence_usage(urls[kind], dirs[kind])  # the set-up's audit entries
        prefill(urls["prefilled"], dirs["prefilled"], args.n, args.prefill, args.sequencing)
        for r in range(args.rounds):
            # Interleaved (fresh, prefilled, fresh, ...) so whatever else loads the shared machine hits both.
            # Each round adds one job's ~0.95N entries to both ledgers.
            for kind in ("fresh", "prefilled"):
                job_id = prepare_job(dirs[kind], urls[kind])
                runs[kind].append(
                    measure(urls[kind], dirs[kind], job_id, args.n, args.reads, f"{kind} #{r + 1}", plans=r == 0)
                )
        fresh, grown = runs["fresh"], runs["prefilled"]
        print("\nphases (s) of each run:")
        shown = [p for p in (*PHASES, "sequence") if any(p in j["timings"] for j in fresh + grown)]
        print(f"  {'run':<14}" + "".join(f"{p[:12]:>13}" for p in shown) + f"{'job':>9}")
        for r in range(args.rounds):
            for kind in ("fresh", "prefilled"):
                j = runs[kind][r]
                cells = "".join(f"{j['timings'].get(p, float('nan')):>13.2f}" for p in shown)
                print(f"  {kind + ' #' + str(r + 1):<14}{cells}{j['seconds']:>9.2f}")
        b, a = min(g["seconds"] for g in grown), min(f["seconds"] for f in fresh)
        _report.compare(
            "job end to end, best of rounds", b, a, unit="s", better="lower", target=TARGET, floor_name="fresh"
        )
        for phase in ("store_ledger", "sequence"):
            b, a = min(g["timings"][phase] for g in grown), min(f["timings"][phase] for f in fresh)
            _report.compare(f"  {phase}, best of rounds", b, a, unit="s", better="lower", floor_name="fresh")
        print(
            f"\nphases (s), median of {args.rounds} round(s): fresh vs prefilled with {args.prefill:,} entries "
            f"(target <= {TARGET}x end to end)"
        )
        for phase in (*PHASES, "sequence"):
            if all(phase in j["timings"] for j in fresh + grown):
                b, a = _median_ratio(fresh, grown, lambda j, p=phase: j["timings"][p])
                _report.compare(f"  {phase}", b, a, unit="s", better="lower", floor_name="fresh")
        for r, (f, g) in enumerate(zip(fresh, grown, strict=True)):
            _report.compare(
                f"job end to end, round {r + 1}",
                g["seconds"],
                f["seconds"],
                unit="s",
                better="lower",
                target=TARGET,
                floor_name="fresh",
            )
        b, a = _median_ratio(fresh, grown, lambda j: j["seconds"])
        _report.compare("job end to end, median", b, a, unit="s", better="lower", target=TARGET, floor_name="fresh")
        b, a = _median_ratio(fresh, grown, lambda j: j["seconds"] + j["timings"]["sequence"])
        _report.compare(
            "job + sequencing its entries, median", b, a, unit="s", better="lower", target=TARGET, floor_name="fresh"
        )
        for key, what in (("read_p50", "usage read p50"), ("read_p99", "usage read p99"), ("proof_p50", "proof p50")):
            b, a = _median_ratio(fresh, grown, lambda j, k=key: j["reads"][k])
            _report.compare(f"{what}, median", b, a, unit="ms", better="lower", floor_name="fresh")
        b, a = _median_ratio(fresh, grown, lambda j: j["reads"]["uses_per_subject"])
        print(f"  (entries per subject read: fresh {a:.1f}, prefilled {b:.1f})")
        b, a = _median_ratio(fresh, grown, lambda j: j["io"]["wal_bytes"] / 2**20)
        print(f"WAL written by the job, median: fresh {a:,.0f} MiB, prefilled {b:,.0f} MiB")
        fresh_sizes, grown_sizes = dict(sizes(urls["fresh"])), sizes(urls["prefilled"])
        print(f"\nrelation sizes after the {args.rounds} round(s): fresh -> prefilled")
        for rel, size in grown_sizes:
            if size >= 2**20:
                print(f"  {rel:<44} {fresh_sizes.get(rel, 0) / 2**20:>9,.0f} MiB -> {size / 2**20:>9,.0f} MiB")
        _report.peak_rss(
            "peak RSS (this process: set-up, prefill and its sequencing)",
            job_fresh=max(j["rss_kib"] for j in fresh),
            job_prefilled=max(j["rss_kib"] for j in grown),
            decrypt_or_sandbox_child=max(j["children_rss_kib"] for j in fresh + grown),
        )
    finally:
        for kind, name in names.items():
            if args.keep:
                print(f"kept: {urls[kind]} (keys in {dirs[kind]})")
            else:
                _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                print(f"dropped {name}")
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
