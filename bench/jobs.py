"""Partner-job bench: one logistic-regression ONNX job over N subjects, end to end.

    .venv/bin/python bench/jobs.py --n 20000        # quick
    .venv/bin/python bench/jobs.py --n 1000000      # target: job end to end < 30 s

Set-up (cached per N under --dir, not timed as part of the job): sealed profiles and one consent grant per
subject (95% of subjects; dimension-level, partner-specific) written in bulk, bypassing HTTP; then a
contract (proposed and approved through the services) and the ONNX model (uploaded through the service,
so its signature is checked in the sandbox). The job runs in a fresh child process so its peak RSS is its
own; it prints each phase (eligibility, emission, sandbox, validation, storage: decisions / ledger /
points) and the end-to-end time. SQLite by default (the embedded database); ``generate`` and ``prepare_job``
also fill a PostgreSQL database (``bench/shards.py`` uses them for the sharded, broker-backed run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARTNER = "bench_insurer"
PURPOSE = "bench_offer"
FEATURES = [
    {"field": "age", "transform": "bin", "edges": [25, 35, 50, 65]},
    {"field": "balance", "transform": "quantile", "q": 5},
    {"field": "income", "transform": "topcode", "upper": 120000, "lower": 0, "step": 20000},
]
FIELD_TYPES = {"age": "integer", "balance": "number", "income": "number"}
GRANT_SHARE = 0.95
MODEL = ([0.6, 0.4, 0.00002], -2.5)  # the logistic regression's weights and bias


def _epoch_store(directory: Path) -> Path:
    """A fresh epoch key store with generation 0 of every bucket (workers then only read it)."""
    import shutil

    from dataspace.vault import file_vault

    shutil.rmtree(directory / "epochs", ignore_errors=True)
    vault = file_vault(directory / "epochs")
    for bucket in range(vault.buckets):
        vault.current_generation(bucket)
    return directory / "epochs"


def _seal_range(epoch_dir: Path, start: int, stop: int) -> tuple[list[tuple[int, ...]], list[tuple[int, bytes]]]:
    from dataspace.subjects.store import seal_profile
    from dataspace.vault import file_vault

    vault = file_vault(epoch_dir)
    rng = np.random.default_rng(start)
    n = stop - start
    latent = rng.integers(0, 10, n)
    keys, profiles = [], []
    for i in range(n):
        c = int(latent[i])
        values = {
            "age": int(22 + 5 * c + rng.integers(0, 5)),
            "balance": float(2000 * (c + 1) ** 2 + rng.random() * 800),
            "income": float(12000 * c + rng.random() * 9000),
        }
        wrapped, sealed = seal_profile(vault, start + i, 0, values)
        keys.append((start + i, vault.bucket(start + i), 0, wrapped))
        profiles.append((start + i, sealed))
    return keys, profiles


def generate(n: int, directory: Path, url: str | None = None) -> None:
    """Keys (``directory/keys.json``), schema, catalog, partner, purpose, then N sealed profiles and their
    grants in one transaction through ``bulk_insert`` (COPY on PostgreSQL). ``url``: an empty database to
    fill; default a new SQLite file ``directory/bench.db``."""
    from sqlalchemy import text

    from consent import Granularity
    from dataspace import migrations
    from dataspace.catalog.models import Dimension, Field, Purpose
    from dataspace.db import Database, bulk_insert, utcnow
    from dataspace.keys import KeyRing, save_key_file
    from dataspace.partners.models import Partner

    directory.mkdir(parents=True, exist_ok=True)
    if url is None:
        db_path = directory / "bench.db"
        db_path.unlink(missing_ok=True)
        url = f"sqlite:///{db_path}"
    ring = KeyRing.generate()
    save_key_file(directory / "keys.json", ring)
    epoch_dir = _epoch_store(directory)
    db = Database(url)
    where = db.engine.url.database if db.is_sqlite else db.engine.url.render_as_string(hide_password=True)
    migrations.upgrade(db.engine)
    with db.transaction() as s:
        s.add(Dimension(key="profile", label="Profile"))
        s.add(Purpose(key=PURPOSE, label="Bench offers", dpv_term="dpv:ServicePersonalisation"))
        s.add(Partner(key=PARTNER, name="Bench insurer", category="insurer"))
        s.flush()
        for key, data_type in FIELD_TYPES.items():
            s.add(
                Field(
                    key=key,
                    dimension_key="profile",
                    label=key,
                    description=key,
                    collection_purpose="bench",
                    storage_location="db",
                    sharing_scope="generalized",
                    retention_days=365,
                    sensitivity="normal",
                    points_value=10,
                    data_type=data_type,
                    transforms={
                        "bin": {"max_values": 10},
                        "quantile": {"max_values": 10},
                        "topcode": {"max_values": 10},
                    },
                )
            )
    t0 = time.perf_counter()
    step = 50_000
    ranges = [(a, min(a + step, n + 1)) for a in range(1, n + 1, step)]
    now = utcnow()
    rng = np.random.default_rng(11)
    ahead = 4  # ranges sealed ahead of the writer: memory stays bounded at any N (10M subjects included)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool, db.transaction() as s:
        futures: deque[Future[tuple[list[tuple[int, ...]], list[tuple[int, bytes]]]]] = deque(
            pool.submit(_seal_range, epoch_dir, a, b) for a, b in ranges[:ahead]
        )
        for j, (a, b) in enumerate(ranges):
            keys, profiles = futures.popleft().result()
            if j + ahead < len(ranges):
                futures.append(pool.submit(_seal_range, epoch_dir, *ranges[j + ahead]))
            bulk_insert(s, "subjects", ("id", "blind_ref", "created_at"), [(i, f"bench-{i}", now) for i in range(a, b)])
            bulk_insert(s, "subject_keys", ("subject_id", "bucket", "epoch", "wrapped_key"), keys)
            bulk_insert(
                s,
                "subject_profiles",
                ("subject_id", "sealed", "version", "updated_at"),
                [(sid, sealed, 1, now) for sid, sealed in profiles],
            )
            granted = [i for i in range(a, b) if rng.random() < GRANT_SHARE]
            scope = f"d:profile|u:{PURPOSE}|p:{PARTNER}"
            bulk_insert(
                s,
                "consent_grants",
                (
                    "subject_id",
                    "scope_key",
                    "active_scope_key",
                    "field_key",
                    "dimension_key",
                    "purpose_key",
                    "partner_key",
                    "partner_category",
                    "granularity",
                    "valid_from",
                    "valid_until",
                    "state",
                    "withdrawn_at",
                    "version",
                    "created_at",
                    "updated_at",
                ),
                [
                    (
                        i,
                        scope,
                        f"{i}|{scope}",
                        None,
                        "profile",
                        PURPOSE,
                        PARTNER,
                        None,
                        Granularity.GENERALIZED.value,
                        now,
                        None,
                        "active",
                        None,
                        1,
                        now,
                        now,
                    )
                    for i in granted
                ],
            )
        if db.engine.dialect.name == "postgresql" and n > 0:  # ids were given explicitly: move the sequence on
            s.execute(text("SELECT setval(pg_get_serial_sequence('subjects', 'id'), :n)"), {"n": n})
    db.dispose()
    print(f"generate: {n} sealed profiles + grants stored in {time.perf_counter() - t0:.1f} s ({where})")


def prepare_job(directory: Path, url: str | None = None) -> int:
    """Contract (proposed, approved), model (uploaded, inspected in the sandbox), job (queued); in the
    database ``generate`` filled (``url``; default ``directory/bench.db``)."""
    from datetime import timedelta

    from sqlalchemy import select

    from dataspace.agreements import contracts
    from dataspace.agreements.models import PrivacyBudget
    from dataspace.db import Database, utcnow
    from dataspace.jobs import service, uploads
    from dataspace.partners.models import Partner
    from dataspace.principal import Principal
    from tests.factories.jobs import logistic_regression

    db = Database(url or f"sqlite:///{directory / 'bench.db'}")
    with db.session() as s:
        partner_id = s.scalar(select(Partner.id).where(Partner.key == PARTNER))
    partner = Principal(subject="bench", role="partner", client_id="bench", partner_id=partner_id, partner_key=PARTNER)
    with db.transaction() as s:
        contract = contracts.propose(
            s,
            principal=partner,
            proposal=contracts.ContractProposal(
                purpose=PURPOSE,
                features=FEATURES,
                decision_schema={"labels": ["standard", "premium"]},
                k_min=10,
                epsilon_per_release=1.0,
                valid_until=utcnow() + timedelta(days=1),
            ),
        )
    steward = Principal(subject="steward", role="steward", client_id="c")
    with db.transaction() as s:
        contracts.approve(s, principal=steward, contract_id=contract.id)
    with db.transaction() as s:
        # Each run's job spends epsilon 1 of the (partner, purpose) budget (10 by default): in a database kept
        # for reruns, the bench's steward tops it up to what this job needs, as an operator would.
        budget = s.scalar(
            select(PrivacyBudget).where(PrivacyBudget.partner_id == partner_id, PrivacyBudget.purpose_key == PURPOSE)
        )
        if budget is not None and budget.micro_epsilon_total - budget.micro_epsilon_spent < contracts.MICRO:
            contracts.set_budget(
                s,
                principal=steward,
                partner_key=PARTNER,
                purpose_key=PURPOSE,
                epsilon_total=budget.micro_epsilon_spent / contracts.MICRO + 1.0,
            )
    t0 = time.perf_counter()
    with db.transaction() as s:
        model = uploads.upload(
            s,
            principal=partner,
            contract_id=contract.id,
            kind="onnx",
            data=logistic_regression(*MODEL),
        )
    print(f"model upload + sandboxed signature check: {time.perf_counter() - t0:.2f} s")
    with db.transaction() as s:
        job_id = service.submit(s, principal=partner, model_id=model.id).id
    db.dispose()
    return job_id


def run(directory: Path, job_id: int, *, points: bool) -> None:
    from dataspace.context import Context
    from dataspace.db import Database
    from dataspace.keys import load_key_file
    from dataspace.settings import Settings

    url = f"sqlite:///{directory / 'bench.db'}"
    settings = Settings(database_url=url, data_dir=directory)
    ctx = Context(settings=settings, db=Database(url), keys=load_key_file(directory / "keys.json"))
    t0 = time.perf_counter()
    result = ctx.jobs.run_job(job_id, credit_inline=False)
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"status": result.status, "error": result.error, "stats": result.stats}))
    for phase, seconds in result.timings.items():
        print(f"  {phase:<16} {seconds:7.2f} s")
    decisions = result.stats.get("decisions", 0)
    print(f"end to end: {total:.2f} s for {decisions} decisions ({decisions / total:,.0f} subjects/s)")
    print(f"peak RSS: server process {rss:.0f} MiB, largest child (decrypt worker / sandbox) {kids:.0f} MiB")
    # For the parent's floors (bench/_floors.py): the job's time and phases.
    (directory / f"job-{job_id}.json").write_text(json.dumps({"seconds": total, "timings": result.timings}))
    if points:
        t0 = time.perf_counter()
        credited = sum(ctx.jobs.credit_shard(job_id, i) for i in range(int(result.stats.get("shards", 0))))
        seconds = time.perf_counter() - t0
        print(
            f"usage points (after the job, idempotent batches): {credited} customers in {seconds:.2f} s "
            f"({credited / seconds:,.0f}/s)"
        )
    else:
        print("usage points: left pending for the worker (pass --points to time them)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "dataspace-bench-jobs")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--points", action="store_true", help="also credit (and time) the usage points")
    parser.add_argument("--no-floors", action="store_true", help="skip the floors (bench/_floors.py)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = args.dir / str(args.n)
    if args.child is not None:
        run(directory, args.child, points=args.points)
        return
    if args.regenerate or not (directory / "bench.db").exists():
        generate(args.n, directory)
    job_id = prepare_job(directory)
    import _floors  # bench/_floors.py: the job's floors, measured after it in this run
    import _report

    url = f"sqlite:///{directory / 'bench.db'}"
    mark = _floors.ledger_mark(url)
    subprocess.run(
        [sys.executable, __file__, "--n", str(args.n), "--dir", str(args.dir), "--child", str(job_id)]
        + (["--points"] if args.points else []),
        check=True,
    )
    if not args.no_floors:
        from tests.factories.jobs import logistic_regression

        job = json.loads((directory / f"job-{job_id}.json").read_text())
        floors = _floors.measure(url, directory / "epochs", job_id, mark, logistic_regression(*MODEL))
        _floors.report(job["seconds"], job["timings"], floors)
    _report.peak_rss("peak RSS (floors in this process; the job's process is the child)")


if __name__ == "__main__":
    main()
