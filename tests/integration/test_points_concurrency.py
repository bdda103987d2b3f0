"""Concurrent redemptions and a kill -9 mid-redemption, on SQLite and PostgreSQL (real threads, real process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select

from dataspace.context import Context
from dataspace.errors import DataspaceError, InsufficientFunds
from dataspace.points import invariants
from dataspace.points import queries as points_queries
from dataspace.points import redemption as points_redemption
from dataspace.points.models import PointsPosting, PointsTransaction, Redemption, Reward
from tests.factories.points import NOW, give, make_reward, make_subjects

REPO = Path(__file__).resolve().parents[2]


def _redeem(ctx: Context, subject_id: int, reward_key: str, key: str) -> str | int:
    try:
        with ctx.db.transaction() as session:
            return points_redemption.redeem(
                session, subject_id=subject_id, reward_key=reward_key, idempotency_key=key, now=NOW
            ).redemption.id
    except DataspaceError as exc:
        return type(exc).__name__


def _run(ctx: Context, jobs: list[tuple[int, str, str]], workers: int = 50) -> list[str | int]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: _redeem(ctx, *job), jobs))


def test_200_concurrent_redemptions_against_a_balance_for_10(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    make_reward(ctx, "coffee", cost=30, stock=1000)
    give(ctx, alice, 300 + 29)  # enough for exactly 10
    results = _run(ctx, [(alice, "coffee", f"k{i}") for i in range(200)])
    outcomes = Counter("ok" if isinstance(r, int) else r for r in results)
    assert outcomes == {"ok": 10, InsufficientFunds.__name__: 190}
    with ctx.db.session() as session:
        assert points_queries.get_summary(session, subject_id=alice, now=NOW).balance == 29
        assert session.scalar(select(Reward.stock)) == 990
        invariants.check_invariants(session)


def test_concurrent_redemptions_never_oversell_stock(ctx: Context) -> None:
    subjects = make_subjects(ctx, 5)
    make_reward(ctx, "lounge", cost=10, stock=5)
    for s in subjects:
        give(ctx, s, 1000)
    results = _run(ctx, [(subjects[i % 5], "lounge", f"k{i}") for i in range(50)])
    assert sum(isinstance(r, int) for r in results) == 5
    assert all(r == InsufficientFunds.__name__ for r in results if not isinstance(r, int))
    with ctx.db.session() as session:
        assert session.scalar(select(Reward.stock)) == 0
        invariants.check_invariants(session)


def test_a_race_on_one_idempotency_key_redeems_once(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    make_reward(ctx, "coffee", cost=10, stock=100)
    give(ctx, alice, 1000)
    results = _run(ctx, [(alice, "coffee", "same-key")] * 20, workers=20)
    assert len(set(results)) == 1
    assert isinstance(results[0], int)
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Redemption)) == 1
        assert points_queries.get_summary(session, subject_id=alice, now=NOW).balance == 990
        invariants.check_invariants(session)


def test_kill_9_during_redemptions_loses_and_duplicates_nothing(ctx: Context) -> None:
    (alice,) = make_subjects(ctx)
    make_reward(ctx, "sticker", cost=1, stock=1_000_000)
    give(ctx, alice, 1_000_000, valid_for=None)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.points_kill_worker", ctx.db.url, str(alice), "sticker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: dict[str, int] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            key, rid = line.split()
            acked[key] = int(rid)
            if len(acked) >= 25:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # Read what is left through the same buffered file: lines it has read ahead but not handed out yet
        # were acknowledged too (communicate() would read the pipe underneath and miss them).
        out = proc.stdout.read() if proc.stdout is not None else ""
        err = proc.stderr.read() if proc.stderr is not None else ""
    assert proc.returncode == -signal.SIGKILL, err
    for line in out.splitlines():  # acknowledged before the kill but not read yet
        key, rid = line.split()
        acked[key] = int(rid)
    assert len(acked) >= 25

    with ctx.db.session() as session:
        rows = session.execute(select(Redemption.idempotency_key, Redemption.id, Redemption.transaction_id)).all()
        by_key = {k: rid for k, rid, _ in rows}
        assert len(by_key) == len(rows)
        for key, rid in acked.items():
            assert by_key[key] == rid  # nothing acknowledged was lost
        # At most the one in flight committed without being acknowledged.
        assert len(rows) - len(acked) in (0, 1)
        per_tx = Counter(
            session.scalars(
                select(PointsPosting.transaction_id)
                .join(PointsTransaction)
                .where(PointsTransaction.kind == "redemption")
            )
        )
        assert set(per_tx) == {tx for _, _, tx in rows}
        assert set(per_tx.values()) == {2}
        invariants.check_invariants(session)
        stock = session.scalar(select(Reward.stock))
        assert stock == 1_000_000 - len(rows)
    # A client that retries an acknowledged key gets the same redemption back and pays nothing.
    some_key = sorted(acked)[0]
    with ctx.db.transaction() as session:
        again = points_redemption.redeem(
            session, subject_id=alice, reward_key="sticker", idempotency_key=some_key, now=NOW
        )
    assert again.replayed
    assert again.redemption.id == acked[some_key]
    with ctx.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Redemption)) == len(rows)
