"""The floors of a partner job (``bench/jobs.py``): the same work done the thinnest way, in the same run.

After the job, on the rows it produced and the blobs it read:

* **decrypt**: every decided subject's wrapped data key and sealed profile, opened with bare AES-GCM
  (``cryptography``'s ``AESGCM``, the epoch cipher looked up once per (bucket, generation)): one core's time,
  divided by the decrypt workers the job's emission used (perfect scaling: a lower bound);
* **score**: the same number of rows x the job's three input fields through the job's ONNX model in a plain
  ``onnxruntime`` session (one intra-op thread, as the sandbox's default ``Limits.threads``), no sandbox;
* **write**: the job's decision rows and ledger rows, read back as stored, written again with a bare
  ``executemany`` (SQLite, one transaction) or ``COPY`` (PostgreSQL) into scratch copies of the two tables
  (same columns and indexes, empty: thinner than a ledger that already holds entries), then dropped.

Reading the rows back is not part of any floor. The job's end-to-end time is compared with the sum of the three
floors (target <= 2x); each phase is also printed beside its own floor.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _report
import numpy as np

NONCE = 12
LEDGER_COLUMNS = ("log", "idx", "entry", "leaf_hash", "created_at", "action", "actor", "subject_id", "partner")
DECISION_COLUMNS = ("job_id", "subject_id", "label", "value")


@dataclass
class Floors:
    subjects: int
    decrypt_one_core: float
    decrypt_workers: int
    score: float
    write_decisions: float
    write_ledger: float

    @property
    def decrypt(self) -> float:
        return self.decrypt_one_core / self.decrypt_workers

    @property
    def write(self) -> float:
        return self.write_decisions + self.write_ledger

    @property
    def total(self) -> float:
        return self.decrypt + self.score + self.write


def ledger_mark(url: str) -> int:
    """The highest ledger row id now: the job's ledger rows are the ones after it."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM tlog_entries")).scalar_one())
    finally:
        engine.dispose()


def _emission_workers(n: int) -> int:
    """The decrypt workers the job's emission starts for ``n`` subjects (its own default)."""
    import os

    try:
        from dataspace.emission.service import PARALLEL_MIN_ROWS
    except ImportError:  # moved: assume the parallel path
        PARALLEL_MIN_ROWS = 0  # noqa: N806
    return min(2, os.cpu_count() or 1) if n >= PARALLEL_MIN_ROWS else 1


def _decrypt(epoch_dir: Path, rows: Sequence[tuple[int, int, bytes, bytes]]) -> tuple[float, list[bytes]]:
    """Open every (subject, generation, wrapped key, sealed profile) with bare AES-GCM; (seconds, plaintexts)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from dataspace.vault import file_vault

    vault = file_vault(epoch_dir)
    buckets = vault.buckets
    ciphers = {}
    for sid, gen, _, _ in rows:  # key loading is not part of the floor
        slot = (sid % buckets, gen)
        if slot not in ciphers:
            ciphers[slot] = vault.keys.cipher(*slot)
    out: list[bytes] = []
    append = out.append
    t0 = time.perf_counter()
    for sid, gen, wrapped, sealed in rows:
        dek = ciphers[(sid % buckets, gen)].decrypt(wrapped[:NONCE], wrapped[NONCE:], b"dek/v2/%d" % sid)
        append(AESGCM(dek).decrypt(sealed[:NONCE], sealed[NONCE:], b"profile/v1/%d" % sid))
    return time.perf_counter() - t0, out


def _score(model: bytes, matrix: np.ndarray) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: matrix[:1]})  # warm
    t0 = time.perf_counter()
    session.run(None, {name: matrix})
    return time.perf_counter() - t0


def _scratch_sqlite(raw: Any, table: str) -> str:
    scratch = f"floor_{table}"
    cur = raw.cursor()
    cur.execute(f'DROP TABLE IF EXISTS "{scratch}"')
    ddl = cur.execute(
        "SELECT type, sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL AND type IN ('table', 'index') "
        "ORDER BY type = 'index'",
        (table,),
    ).fetchall()
    for kind, original in ddl:
        if kind == "table":
            sql = re.sub(rf'^CREATE TABLE\s+"?{table}"?', f'CREATE TABLE "{scratch}"', original)
        else:
            sql = re.sub(
                rf'^CREATE (UNIQUE )?INDEX\s+"?(\w+)"?\s+ON\s+"?{table}"?',
                rf'CREATE \1INDEX "floor_\2" ON "{scratch}"',
                original,
            )
        cur.execute(sql)
    cur.close()
    return scratch


def _write(url: str, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> float:
    """Write ``rows`` into an empty scratch copy of ``table`` (same columns and indexes) in one transaction,
    with the driver's bulk path; returns the seconds from BEGIN to COMMIT. The copy is dropped afterwards."""
    from dataspace.db import Database

    db = Database(url)  # the application's engine: its connection settings (SQLite pragmas) apply
    raw = db.engine.raw_connection()
    cols = ", ".join(f'"{c}"' for c in columns)
    try:
        driver = raw.driver_connection
        if db.is_sqlite:
            scratch = _scratch_sqlite(driver, table)
            cur = driver.cursor()
            t0 = time.perf_counter()
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany(f'INSERT INTO "{scratch}" ({cols}) VALUES ({", ".join("?" * len(columns))})', rows)
            cur.execute("COMMIT")
            seconds = time.perf_counter() - t0
            cur.execute(f'DROP TABLE "{scratch}"')
            cur.close()
            return seconds
        scratch = f"floor_{table}"
        with driver.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{scratch}"')
            cur.execute(f'CREATE TABLE "{scratch}" (LIKE "{table}" INCLUDING ALL)')
        driver.commit()
        t0 = time.perf_counter()
        with driver.cursor() as cur, cur.copy(f'COPY "{scratch}" ({cols}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        driver.commit()
        seconds = time.perf_counter() - t0
        with driver.cursor() as cur:
            cur.execute(f'DROP TABLE "{scratch}"')
        driver.commit()
        return seconds
    finally:
        raw.close()
        db.dispose()


def measure(url: str, epoch_dir: Path, job_id: int, ledger_after: int, model: bytes) -> Floors:
    """The three floors of job ``job_id`` (run against ``url``; its ledger rows have ids > ``ledger_after``)."""
    import orjson
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    t0 = time.perf_counter()
    with engine.connect() as conn:
        blobs = [
            (int(sid), int(gen), bytes(w), bytes(s))
            for sid, gen, w, s in conn.execute(
                text(
                    "SELECT d.subject_id, k.epoch, k.wrapped_key, p.sealed FROM decisions d "
                    "JOIN subject_keys k ON k.subject_id = d.subject_id "
                    "JOIN subject_profiles p ON p.subject_id = d.subject_id "
                    "WHERE d.job_id = :job ORDER BY d.subject_id"
                ),
                {"job": job_id},
            )
        ]
        decisions = [
            tuple(r)
            for r in conn.execute(
                text(f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE job_id = :job ORDER BY subject_id"),
                {"job": job_id},
            )
        ]
        # Raw stored values (SQLite keeps datetimes as text): read through the driver, not the ORM types.
        ledger = [
            tuple(r)
            for r in conn.exec_driver_sql(
                f"SELECT {', '.join(LEDGER_COLUMNS)} FROM tlog_entries WHERE id > {int(ledger_after)} "
                "AND action = 'data.used' ORDER BY id"
            )
        ]
    engine.dispose()
    print(
        f"floors: read back {len(blobs):,} sealed profiles, {len(decisions):,} decisions, {len(ledger):,} ledger "
        f"rows in {time.perf_counter() - t0:.2f} s (not part of any floor)",
        flush=True,
    )
    decrypt_seconds, plain = _decrypt(epoch_dir, blobs)
    del blobs
    fields = ("age", "balance", "income")
    matrix = np.empty((len(plain), len(fields)), dtype=np.float32)
    for i, p in enumerate(plain):
        values = orjson.loads(p)
        matrix[i] = [values[f] for f in fields]
    del plain
    score_seconds = _score(model, matrix) if len(matrix) else 0.0
    write_decisions = _write(url, "decisions", DECISION_COLUMNS, decisions)
    write_ledger = _write(url, "tlog_entries", LEDGER_COLUMNS, ledger)
    return Floors(
        subjects=len(matrix),
        decrypt_one_core=decrypt_seconds,
        decrypt_workers=_emission_workers(len(matrix)),
        score=score_seconds,
        write_decisions=write_decisions,
        write_ledger=write_ledger,
    )


def report(job_seconds: float, timings: dict[str, float], floors: Floors) -> None:
    """Each phase beside its floor, then the job beside the sum of the floors (target <= 2x)."""
    print(
        f"\nfloors for {floors.subjects:,} decided subjects: decrypt {floors.decrypt_one_core:.2f} s on one core "
        f"/ {floors.decrypt_workers} worker(s) = {floors.decrypt:.2f} s; score {floors.score:.2f} s; write "
        f"decisions {floors.write_decisions:.2f} s + ledger {floors.write_ledger:.2f} s"
    )
    phases = (
        ("emission (read + decrypt + features)", ("emission",), floors.decrypt, "bare AES-GCM decrypt"),
        ("sandbox (score)", ("sandbox",), floors.score, "bare onnxruntime"),
        ("store decisions", ("store_decisions",), floors.write_decisions, "bare bulk write"),
        ("store ledger", ("store_ledger",), floors.write_ledger, "bare bulk write"),
    )
    for name, keys, floor, floor_name in phases:
        if all(k in timings for k in keys):
            _report.compare(name, sum(timings[k] for k in keys), floor, unit="s", better="lower", floor_name=floor_name)
    _report.compare(
        "job end to end",
        job_seconds,
        floors.total,
        unit="s",
        better="lower",
        target=2.0,
        floor_name="sum of floors",
    )
