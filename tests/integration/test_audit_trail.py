"""Audit trail and data-point ledger on both databases: search, usage view, exports, offline verification."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataspace.audit import record_event
from dataspace.audit.search import search_events
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.errors import NotFound
from dataspace.keys import Ed25519Key
from dataspace.principal import Principal
from dataspace.tlog.export import write_export
from dataspace.tlog.log import latest_checkpoint, sequence, verifier_keys
from dataspace.usage import UsageEntry, record_usage, usage_for_subject, usage_proof
from transparency import merkle
from transparency.export import verify_export
from transparency.note import key_name, verifier_key

CUSTOMER = Principal(subject="c1", role="customer", client_id="portal", subject_id=7)
PARTNER = Principal(subject="acme-client", role="partner", client_id="acme-client", partner_id=1, partner_key="acme")
STEWARD = Principal(subject="alice", role="steward", client_id="console")


def _events(ctx: Context, n: int) -> None:
    with ctx.db.transaction() as s:
        for i in range(n):
            actor = [CUSTOMER, PARTNER, STEWARD, None][i % 4]
            record_event(
                s,
                actor=actor,
                action=["consent.grant", "job.submit", "catalog.update", "authz.denied"][i % 4],
                target=f"subject:{100 + i}" if i % 4 == 2 else f"obj:{i}",
                request_id=f"r{i}",
                details={"n": i},
            )


def test_search_filters_and_paginates_over_queued_and_sequenced(ctx: Context) -> None:
    _events(ctx, 20)
    sequence(ctx.settings, ctx.db, ctx.keys, "audit")
    _events(ctx, 4)  # queued, not yet sequenced
    with ctx.db.session() as s:
        page = search_events(s, limit=10)
        seen = [e.id for e in page.items]
        while page.next_cursor:
            page = search_events(s, limit=10, cursor=page.next_cursor)
            seen += [e.id for e in page.items]
        assert len(seen) == len(set(seen)) == 24
        assert seen == sorted(seen, reverse=True)
        assert sum(1 for _ in seen) == 24
        by_action = search_events(s, action="consent.grant").items
        assert len(by_action) == 6
        assert all(e.entry["action"] == "consent.grant" for e in by_action)
        assert len(search_events(s, action="consent.*").items) == 6
        mine = search_events(s, subject_id=7).items
        assert len(mine) == 6
        assert all(e.entry["actor"] == "customer:c1" for e in mine)
        assert {e.entry["target"] for e in search_events(s, subject_id=102).items} == {"subject:102"}
        assert len(search_events(s, partner="acme").items) == 6
        assert len(search_events(s, since=utcnow() + timedelta(minutes=1)).items) == 0
        assert len(search_events(s, until=utcnow() + timedelta(minutes=1), limit=500).items) == 24
        denied = search_events(s, action="authz.denied").items[0].entry
        assert denied["actor"] == "anonymous"
        assert denied["role"] is None
        assert {e.index is None for e in search_events(s, limit=500).items} == {True, False}


def test_usage_view_groups_by_field_and_proves_inclusion(ctx: Context) -> None:
    with ctx.db.transaction() as s:
        record_usage(s, [UsageEntry(1, 7, ("age", "income"), "acme", "insurance.offer", "bundle-x")])
        record_usage(s, [UsageEntry(1, 8, ("income",), "acme", "insurance.offer", "none")])
        record_usage(s, [UsageEntry(2, 7, ("income",), "volt", "charging.offer", "plan-b")])
    res = sequence(ctx.settings, ctx.db, ctx.keys, "usage")
    with ctx.db.session() as s:
        view = usage_for_subject(s, 7)
        assert [f.field for f in view] == ["age", "income"]
        income = view[1].uses
        assert [(u.partner, u.purpose, u.decision) for u in income] == [
            ("volt", "charging.offer", "plan-b"),
            ("acme", "insurance.offer", "bundle-x"),
        ]
        assert all(u.index is not None for u in income)
        idx = income[0].index
        assert idx is not None
        proof, note = usage_proof(s, subject_id=7, index=idx)
        with pytest.raises(NotFound):
            usage_proof(s, subject_id=8, index=idx)  # someone else's entry
    cp = latest_checkpoint_for(ctx, "usage")
    assert cp.size == res.size == 3
    merkle.verify_inclusion(idx, proof.tree_size, proof.leaf_hash, proof.hashes, cp.root_hash)
    assert note == cp.note


def latest_checkpoint_for(ctx: Context, log: str):
    with ctx.db.session() as s:
        cp = latest_checkpoint(s, log=log)
    assert cp is not None
    return cp


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_verifies_offline_and_reports_the_first_tampered_entry(ctx: Context, tmp_path: Path, fmt: str) -> None:
    _events(ctx, 37)
    sequence(ctx.settings, ctx.db, ctx.keys, "audit", limit=10)
    cp = latest_checkpoint_for(ctx, "audit")
    path = tmp_path / f"audit.{fmt}"
    with ctx.db.session() as s:
        write_export(s, path, cp=cp, fmt=fmt)
    keys = verifier_keys(ctx.settings, ctx.keys)
    report = verify_export(path, keys)
    assert report.ok
    assert report.entries == 37
    assert report.root_hash == cp.root_hash.hex()

    lines = path.read_text().splitlines(keepends=True)
    first_entry_line = 1 if fmt == "jsonl" else 2

    def tampered(new_lines: list[str]) -> Path:
        out = tmp_path / f"bad.{fmt}"
        out.write_text("".join(new_lines))
        return out

    # an edited entry
    bad = list(lines)
    old, new = ('""n"":12', '""n"":13') if fmt == "csv" else ('"n":12', '"n":13')
    bad[first_entry_line + 12] = bad[first_entry_line + 12].replace(old, new)
    assert bad != lines
    r = verify_export(tampered(bad), keys)
    assert not r.ok
    assert r.first_bad_index == 12

    # a deleted entry
    bad = lines[: first_entry_line + 5] + lines[first_entry_line + 6 :]
    r = verify_export(tampered(bad), keys)
    assert not r.ok
    assert r.first_bad_index == 5

    # a truncated export
    r = verify_export(tampered(lines[:-1]), keys)
    assert not r.ok
    assert r.first_bad_index == 36

    # a wrong key, or a forged checkpoint
    other = Ed25519Key.generate()
    r = verify_export(path, [verifier_key(key_name("x", other), other.public_bytes)])
    assert not r.ok
    assert "signature" in (r.reason or "")
    bad = list(lines)
    bad[0] = bad[0].replace("\\n37\\n", "\\n36\\n")
    assert bad[0] != lines[0]
    assert not verify_export(tampered(bad), keys).ok


def test_rewritten_entry_and_leaf_hash_still_fail_on_the_root(ctx: Context, tmp_path: Path) -> None:
    _events(ctx, 9)
    sequence(ctx.settings, ctx.db, ctx.keys, "audit")
    cp = latest_checkpoint_for(ctx, "audit")
    path = tmp_path / "a.jsonl"
    with ctx.db.session() as s:
        write_export(s, path, cp=cp, fmt="jsonl")
    lines = path.read_text().splitlines(keepends=True)
    rec = json.loads(lines[4])
    rec["entry"]["result"] = "ok-but-forged"
    body = json.dumps(rec["entry"], sort_keys=True, separators=(",", ":"))
    rec["leaf_hash"] = hashlib.sha256(b"\x00" + body.encode()).hexdigest()
    lines[4] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))
    r = verify_export(path, verifier_keys(ctx.settings, ctx.keys))
    assert not r.ok
    assert "root" in (r.reason or "")


def test_cli_verify(ctx: Context, tmp_path: Path) -> None:
    from dataspace.cli import app

    _events(ctx, 5)
    sequence(ctx.settings, ctx.db, ctx.keys, "audit")
    path = tmp_path / "a.jsonl"
    with ctx.db.session() as s:
        write_export(s, path, cp=latest_checkpoint_for(ctx, "audit"), fmt="jsonl")
    args = ["audit", "verify", str(path)]
    for k in verifier_keys(ctx.settings, ctx.keys):
        args += ["--key", k]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "OK: 5 entries" in ok.output
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"result":"ok"', '"result":"no"')
    path.write_text("".join(lines))
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 1
    assert "index 2" in bad.output
