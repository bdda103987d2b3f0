"""The access export (GET /v1/me/export) is complete at any account size: a large account's every usage
ledger entry, redemption, posting, consent change and receipt is in it (compared with the database), the
manifest's counts and SHA-256 digests match, and the export streams in bounded chunks."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from clients.sdk import read_access_export as read_export
from dataspace.app import create_app
from dataspace.compliance import export
from dataspace.compliance.export import stream_export
from dataspace.consents import changes as consent_changes
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.grants.models import ConsentEvent, ConsentGrant, ConsentReceipt
from dataspace.points import rewards
from dataspace.points.models import PointsAccount, PointsPosting, PointsTransaction, Redemption, Reward
from dataspace.points.schemas import RewardCreate
from dataspace.tlog.models import TLogEntry
from dataspace.usage import UsageEntry, record_usage
from dataspace.usage.service import USAGE_LOG
from tests.factories.catalog import load_demo_catalog
from tests.factories.identities import bearer, issue_token, make_subject

USES, REDEMPTIONS, TOGGLES = 10_000, 1_000, 250  # 250 grants + 250 withdrawals = 500 consent changes


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    load_demo_catalog(ctx)
    with TestClient(create_app(ctx)) as c:
        yield c


def _big_account(ctx: Context) -> int:
    """A customer with 10,000 uses, 1,000 redemptions and 500 consent changes, built through the bulk
    paths (the ledger's bulk append, multi-row inserts) and the consent service."""
    sid = make_subject(ctx)
    other = make_subject(ctx)  # someone else's records must not appear
    now = utcnow()
    with ctx.db.transaction() as s:
        record_usage(
            s,
            [
                UsageEntry(job_id=i, subject_id=who, fields=("age",), partner="harbor_insurance", purpose="marketing")
                for i in range(USES)
                for who in ((sid, other) if i % 100 == 0 else (sid,))
            ],
        )
    with ctx.db.transaction() as s:
        rewards.create_reward(s, data=RewardCreate(key="lounge", name="Lounge", cost=10, stock=1_000_000))
        reward_id = s.scalar(select(Reward.id).where(Reward.key == "lounge"))
        account = s.scalar(
            insert(PointsAccount)
            .values(code=f"customer:{sid}", kind="customer", subject_id=sid)
            .returning(PointsAccount.id)
        )
        tx_ids = s.scalars(
            insert(PointsTransaction).returning(PointsTransaction.id),
            [
                {"kind": "redemption", "idempotency_key": f"export-test-{i}", "reason": "lounge"}
                for i in range(REDEMPTIONS)
            ],
        ).all()
        s.execute(insert(PointsPosting), [{"transaction_id": t, "account_id": account, "amount": -10} for t in tx_ids])
        s.execute(
            insert(Redemption),
            [
                {
                    "subject_id": sid,
                    "reward_id": reward_id,
                    "idempotency_key": f"k{i}",
                    "request_hash": "0" * 64,
                    "quantity": 1,
                    "cost": 10,
                    "transaction_id": t,
                    "response": {
                        "id": i + 1,
                        "reward_key": "lounge",
                        "reward_name": "Lounge",
                        "quantity": 1,
                        "cost": 10,
                        "status": "completed",
                        "transaction_id": t,
                        "balance_after": 0,
                        "created_at": now.isoformat(),
                    },
                }
                for i, t in enumerate(tx_ids)
            ],
        )
    with ctx.db.transaction() as s:
        for _ in range(TOGGLES):
            change = consent_changes.grant(
                s,
                subject_id=sid,
                request=consent_changes.GrantRequest(purpose="marketing", field="age", partner="harbor_insurance"),
                signer=ctx.keys.signing_key,
            )
            consent_changes.withdraw(s, subject_id=sid, grant_id=change.grant.id, signer=ctx.keys.signing_key)
    return sid


def test_export_of_a_large_account_holds_every_record(client, ctx):
    sid = _big_account(ctx)
    me = bearer(issue_token(ctx, "customer", subject_id=sid))
    with client.stream("GET", "/v1/me/export", headers=me) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(export.MEDIA_TYPE)
        body = b"".join(r.iter_bytes())
    doc = read_export(body.splitlines(keepends=True))  # counts and SHA-256 checked against the manifest
    sections: dict[str, list[Any]] = doc["sections"]
    counts = doc["manifest"]["counts"]

    with ctx.db.session() as s:
        uses = s.scalars(select(TLogEntry.entry).where(TLogEntry.log == USAGE_LOG, TLogEntry.subject_id == sid)).all()
        redemptions = set(s.scalars(select(Redemption.id).where(Redemption.subject_id == sid)))
        events = set(s.scalars(select(ConsentEvent.receipt_id).where(ConsentEvent.subject_id == sid)))
        receipts = set(s.scalars(select(ConsentReceipt.id).where(ConsentReceipt.subject_id == sid)))
        grants = set(s.scalars(select(ConsentGrant.id).where(ConsentGrant.subject_id == sid)))
        account = s.scalar(select(PointsAccount.id).where(PointsAccount.subject_id == sid))
        postings = set(s.scalars(select(PointsPosting.id).where(PointsPosting.account_id == account)))

    assert len(uses) == USES
    assert counts["usage"] == USES
    assert sorted(u["job_id"] for u in sections["usage"]) == sorted(orjson.loads(e)["job_id"] for e in uses)
    assert counts["redemptions"] == REDEMPTIONS
    assert len({r["id"] for r in sections["redemptions"]}) == len(redemptions) == REDEMPTIONS
    assert counts["consent_events"] == 2 * TOGGLES
    assert {e["receipt_id"] for e in sections["consent_events"]} == events
    assert {r["receipt_id"] for r in sections["receipts"]} == receipts
    assert len(receipts) == 2 * TOGGLES
    assert {g["id"] for g in sections["consents"]} == grants
    assert {p["id"] for p in sections["points_postings"]} == postings
    assert len(postings) >= REDEMPTIONS
    assert doc["header"]["subject"]["id"] == sid
    assert set(doc["header"]["sections"]) == set(export.SECTIONS)


def test_export_streams_in_bounded_chunks_and_a_cut_download_is_detected(ctx):
    load_demo_catalog(ctx)
    sid = _big_account(ctx)
    chunks = []
    for chunk in stream_export(ctx.settings, ctx.db, ctx.vault, sid, batch_bytes=16 * 1024):
        assert len(chunk) < 16 * 1024 + 8 * 1024  # a chunk is sent once it passes the batch size
        chunks.append(chunk)
    assert len(chunks) > 50
    body = b"".join(chunks)
    lines = body.splitlines(keepends=True)
    read_export(lines)
    with pytest.raises(ValueError, match="incomplete"):
        read_export(lines[:-1])  # the manifest line is missing: the download was cut off
    dropped = [line for line in lines if b'"section":"redemptions"' not in line or b'"id":7,' not in line]
    assert len(dropped) == len(lines) - 1
    with pytest.raises(ValueError, match="redemptions"):
        read_export(dropped)  # one record missing: the count and the digest say so
    manifest = orjson.loads(lines[-1])["record"]
    usage_lines = b"".join(line for line in lines if line.startswith(b'{"section":"usage"'))
    assert manifest["sha256"]["usage"] == hashlib.sha256(usage_lines).hexdigest()


def _peak_while_streaming(ctx: Context, sid: int) -> tuple[int, int]:
    """(peak traced memory while the export streams and is thrown away, bytes sent)."""
    tracemalloc.start()
    try:
        sent = sum(len(chunk) for chunk in stream_export(ctx.settings, ctx.db, ctx.vault, sid))
        return tracemalloc.get_traced_memory()[1], sent
    finally:
        tracemalloc.stop()


def test_export_memory_does_not_grow_with_the_account(ctx):
    """Ten times the uses: ten times the bytes sent, not ten times the server's memory (it holds a chunk)."""
    sid = make_subject(ctx)

    def add_uses(start: int, n: int) -> None:
        with ctx.db.transaction() as s:
            record_usage(
                s,
                [
                    UsageEntry(job_id=i, subject_id=sid, fields=("age", "city"), partner="p", purpose="marketing")
                    for i in range(start, start + n)
                ],
            )

    add_uses(0, 3_000)
    small_peak, small_sent = _peak_while_streaming(ctx, sid)
    add_uses(3_000, 27_000)
    large_peak, large_sent = _peak_while_streaming(ctx, sid)
    assert large_sent > 8 * small_sent
    assert large_peak < 2 * small_peak, (small_peak, large_peak)
