"""Partner-column keys live outside the database (``dataspace.linkage.keys``), on SQLite and PostgreSQL:

- a run's key-encryption key is destroyed when its shredding commits (kept when the shredding rolls back),
  and the sweep destroys what a revocation left;
- crypto-shredding survives a restore: a backup taken before the revocation (``dataspace backup``) and
  restored after it (``dataspace restore``) cannot open the partner's rows, and the restore says so;
- the customer's side through the API the portal uses: grant, link, the ledger and the export name the
  partner, withdrawal removes the link and keeps the customer out of every later join.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from dataspace.cli import app as cli_app
from dataspace.context import Context
from dataspace.jobs import revocation
from dataspace.keys import save_key_file
from dataspace.linkage import service as linkage
from dataspace.linkage.models import Contribution, Link
from dataspace.vault import DecryptionError
from tests.factories.jobs import PARTNER, PURPOSE, steward

# The drill's fixtures (a deployment with a small key store, and fresh databases of the same kind); importing
# the drill module also registers the CLI's sub-commands.
from tests.integration.test_backup_drill import BUCKETS, fresh, source  # noqa: F401
from tests.integration.test_linkage import (
    SpecPartner,
    approved_contract,
    complete,
    links,
    message,
    partner_records,
    phone,
    pkeys,
    start,
    world,
)


def _linked_run(ctx: Context, contract_id: int, n: int) -> Contribution:
    run = start(ctx, contract_id)
    p = SpecPartner()
    complete(ctx, run.id, p.reply(run.id, run.public_key, message(ctx, run.id), partner_records(n)))
    return run


def _status(ctx: Context, cid: int) -> tuple[str, bool, int]:
    with ctx.db.session() as s:
        row = s.get(Contribution, cid)
        assert row is not None
        count = s.scalar(select(func.count()).select_from(Link).where(Link.contribution_id == cid))
        return row.status, row.wrapped_private_key is not None, int(count or 0)


def test_a_runs_key_goes_when_its_shredding_commits_and_stays_when_it_rolls_back(ctx: Context) -> None:
    subjects, _, _ = world(ctx, n=12)
    contract_id = approved_contract(ctx)
    keys = pkeys(ctx)
    first = _linked_run(ctx, contract_id, 12)
    assert keys.has(first.id)
    second = _linked_run(ctx, contract_id, 12)  # replaces the first: its rows and its key go
    assert not keys.has(first.id)
    assert keys.has(second.id)

    def failed_revocation() -> None:
        with ctx.db.transaction() as s:
            linkage.shred_contract(s, contract_id=contract_id, keys=keys)
            raise RuntimeError("the revocation failed")

    with pytest.raises(RuntimeError):
        failed_revocation()
    assert keys.has(second.id)  # nothing was shredded, so nothing was destroyed
    assert _status(ctx, second.id)[0] == "linked"

    # A key lost while the row still says "linked" (destroyed, then the shredding's commit failed): the run
    # opens nothing, and the sweep records it as shredded.
    keys.destroy(second.id)
    with ctx.db.transaction() as s:
        assert linkage.partner_columns(s, keys, contract_id=contract_id, subject_ids=subjects) == ([], {})
        assert linkage.reconcile(s, keys) == [second.id]
    assert _status(ctx, second.id) == ("shredded", False, 0)


def test_a_revocation_leaves_the_key_to_the_sweep(ctx: Context) -> None:
    world(ctx, n=12)
    contract_id = approved_contract(ctx)
    run = _linked_run(ctx, contract_id, 12)
    keys = pkeys(ctx)
    with ctx.db.transaction() as s:  # the steward's revocation (no key store at hand): rows shredded at once
        revocation.revoke(s, principal=steward("alice"), contract_id=contract_id)
    assert _status(ctx, run.id) == ("shredded", False, 0)
    assert keys.has(run.id)
    with ctx.db.transaction() as s:  # the background sweep (consent-expiry task)
        assert linkage.destroy_shredded(s, keys) == 1
    assert not keys.has(run.id)
    with ctx.db.transaction() as s:
        assert linkage.destroy_shredded(s, keys) == 0


def test_a_backup_taken_before_the_revocation_cannot_open_the_partner_columns_after_a_restore(
    source: Context,  # noqa: F811
    fresh: Callable[[], Context],  # noqa: F811
    tmp_path: Path,
) -> None:
    subjects, _, _ = world(source, n=12)
    contract_id = approved_contract(source)
    run = _linked_run(source, contract_id, 12)
    assert links(source)
    keys = pkeys(source)
    with source.db.session() as s:
        row = s.get(Contribution, run.id)
        assert row is not None
        wrapped = row.wrapped_private_key
    assert wrapped is not None

    key_file = tmp_path / "keys.json"
    save_key_file(key_file, source.keys)
    env = {
        "DATASPACE_DATA_DIR": str(source.settings.data_dir),
        "DATASPACE_KEY_FILE": str(key_file),
        "DATASPACE_EPOCH_BUCKETS": str(BUCKETS),
        "DATASPACE_DATABASE_URL": source.db.url,
    }
    runner = CliRunner()
    made = runner.invoke(cli_app, ["backup", str(tmp_path / "b")], env=env)
    assert made.exit_code == 0, made.output

    with source.db.transaction() as s:  # the contract ends; the sweep destroys the run's key
        revocation.revoke(s, principal=steward("alice"), contract_id=contract_id)
    with source.db.transaction() as s:
        linkage.destroy_shredded(s, keys)
    # The wrapped key the backup holds no longer opens: its key-encryption key exists nowhere.
    with pytest.raises(DecryptionError):
        keys.unwrap(run.id, wrapped, linkage._label(run.id, "private"))

    target = fresh()
    env["DATASPACE_DATABASE_URL"] = target.db.url
    done = runner.invoke(cli_app, ["restore", "--accept-log-rollback", str(tmp_path / "b")], env=env)
    assert done.exit_code == 0, done.output
    assert "1 partner contributions shredded since the backup shredded again" in " ".join(done.stdout.split())
    # The restored database has the run as shredded, no links, no wrapped key; nothing joins.
    assert _status(target, run.id) == ("shredded", False, 0)
    with target.db.transaction() as s:
        assert linkage.partner_columns(s, pkeys(target), contract_id=contract_id, subject_ids=subjects) == ([], {})


def test_a_run_live_at_the_backup_and_after_it_survives_the_restore(
    source: Context,  # noqa: F811
    fresh: Callable[[], Context],  # noqa: F811
    tmp_path: Path,
) -> None:
    subjects, _, _ = world(source, n=12)
    contract_id = approved_contract(source)
    run = _linked_run(source, contract_id, 12)
    key_file = tmp_path / "keys.json"
    save_key_file(key_file, source.keys)
    env = {
        "DATASPACE_DATA_DIR": str(source.settings.data_dir),
        "DATASPACE_KEY_FILE": str(key_file),
        "DATASPACE_EPOCH_BUCKETS": str(BUCKETS),
        "DATASPACE_DATABASE_URL": source.db.url,
    }
    runner = CliRunner()
    assert runner.invoke(cli_app, ["backup", str(tmp_path / "b")], env=env).exit_code == 0
    target = fresh()
    env["DATASPACE_DATABASE_URL"] = target.db.url
    done = runner.invoke(cli_app, ["restore", "--accept-log-rollback", str(tmp_path / "b")], env=env)
    assert done.exit_code == 0, done.output
    assert "0 partner contributions" in " ".join(done.stdout.split())
    assert _status(target, run.id)[0] == "linked"
    with target.db.transaction() as s:
        _, values = linkage.partner_columns(s, pkeys(target), contract_id=contract_id, subject_ids=subjects)
    assert set(values) == links(source)


def test_the_customer_grants_and_withdraws_linkage_through_the_portals_api(ctx: Context) -> None:
    """What the portal does: read the offer, grant it, see the link, the ledger entry and the export line;
    withdraw it: the link goes and no later job or decision joins the partner's values for this customer,
    even after granting again (a new link needs a new run by the partner)."""
    from fastapi.testclient import TestClient

    from dataspace.app import create_app
    from tests.factories.identities import bearer, issue_token

    subjects, _, _ = world(ctx, n=6)
    contract_id = approved_contract(ctx)
    me = subjects[3]  # no grant in `world`
    client = TestClient(create_app(ctx))
    headers = bearer(issue_token(ctx, "customer", subject_id=me))
    (offer,) = client.get("/v1/me/linkage", headers=headers).json()["offers"]
    assert offer["partner"] == PARTNER
    assert offer["purpose"] == PURPOSE
    assert [c["key"] for c in offer["columns"]] == ["policy_expiry_month", "claims_band"]
    granted = client.post("/v1/me/consents", json={**offer["grant"]}, headers=headers)
    assert granted.status_code in (200, 201), granted.text
    grant_id = granted.json()["grant"]["id"]
    # It is in the customer's consent list like any grant (the portal's matrix shows it).
    matrix = client.get("/v1/me/consents", headers=headers).json()
    assert any(g["id"] == grant_id and g["dimension"] == "linkage" for g in matrix["grants"])

    run = start(ctx, contract_id)
    records = [(phone(3), {"policy_expiry_month": 4, "claims_band": "none"})]
    complete(ctx, run.id, SpecPartner().reply(run.id, run.public_key, message(ctx, run.id), records))
    assert me in links(ctx)
    (link,) = client.get("/v1/me/linkage", headers=headers).json()["links"]
    assert link["partner"] == PARTNER
    with ctx.db.transaction() as s:  # a job under the contract joins my partner values
        _, values = linkage.partner_columns(s, pkeys(ctx), contract_id=contract_id, subject_ids=[me], job_id=7)
    assert values[me] == {"policy_expiry_month": 4, "claims_band": "none"}

    # The ledger the portal shows has the linkage and the use of the partner's columns; the export names the
    # partner that linked records about me.
    usage = client.get("/v1/me/usage", headers=headers).json()
    fields = {f["field"] for f in usage["fields"]}
    assert {"linkage:phone", "partner:policy_expiry_month", "partner:claims_band"} <= fields
    exported = client.get("/v1/me/export", headers=headers)
    assert exported.status_code == 200, exported.text
    sections = [json.loads(line) for line in exported.text.splitlines() if line.strip()]
    partner_links = [x["record"] for x in sections if x.get("section") == "partner_links"]
    assert [r["partner"] for r in partner_links] == [PARTNER]

    gone = client.delete(f"/v1/me/consents/{grant_id}", headers=headers)
    assert gone.status_code == 200, gone.text
    assert client.get("/v1/me/linkage", headers=headers).json()["links"] == []
    assert me not in links(ctx)
    with ctx.db.transaction() as s:
        assert me not in linkage.partner_columns(s, pkeys(ctx), contract_id=contract_id, subject_ids=[me])[1]
    # Granting again does not bring the old link back: the partner must run the linkage again.
    again = client.post("/v1/me/consents", json={**offer["grant"]}, headers=headers)
    assert again.status_code in (200, 201), again.text
    with ctx.db.transaction() as s:
        assert me not in linkage.partner_columns(s, pkeys(ctx), contract_id=contract_id, subject_ids=[me])[1]
