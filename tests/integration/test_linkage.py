"""Consent-gated linkage by PSI, on SQLite and PostgreSQL.

The partner's side here is written from the specification in the README (SHA-512 onto Ed25519 with
Elligator 2, blinding with ``crypto_scalarmult_ed25519_noclamp``, the reply's byte layout), not with the
SDK's or the server's code, so a disagreement between the spec and either implementation fails a test.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from nacl import bindings as nb
from nacl.exceptions import CryptoError
from nacl.public import PublicKey, SealedBox
from sqlalchemy import func, select

from dataspace.agreements import contracts
from dataspace.agreements.models import PrivacyBudget
from dataspace.consents import changes
from dataspace.consents import queries as consent_queries
from dataspace.context import Context
from dataspace.errors import Conflict, InvalidInput
from dataspace.jobs import revocation
from dataspace.linkage import service as linkage
from dataspace.linkage.keys import PartnerKeys
from dataspace.linkage.models import Contribution, Link
from dataspace.subjects.store import store_profiles
from dataspace.tlog.models import TLogEntry
from tests.factories.catalog import customer_row, load_demo_catalog
from tests.factories.jobs import PARTNER, PURPOSE, partner_principal, propose, steward

COLUMNS = [
    {"key": "policy_expiry_month", "data_type": "integer", "meaning": "month your policy with us expires"},
    {"key": "claims_band", "data_type": "string", "meaning": "how many claims", "values": ["none", "some", "many"]},
]


# --- the partner's side, from the spec --------------------------------------------------------------------------
def spec_hash(kind: str, norm: str) -> bytes:
    h = hashlib.sha512(b"dataspace-psi/v1\x00" + kind.encode() + b"\x00" + norm.encode()).digest()
    return nb.crypto_core_ed25519_add(
        nb.crypto_core_ed25519_from_uniform(h[:32]), nb.crypto_core_ed25519_from_uniform(h[32:])
    )


class SpecPartner:
    def __init__(self) -> None:
        self.b = nb.crypto_core_ed25519_scalar_reduce(os.urandom(64))
        self.data_key = os.urandom(32)

    def blind(self, p: bytes) -> bytes:
        return nb.crypto_scalarmult_ed25519_noclamp(self.b, p)

    def seal(self, cid: int, blinded: bytes, values: dict[str, Any]) -> bytes:
        import json

        nonce = os.urandom(24)
        aad = b"dataspace-linkage-row/v1" + struct.pack(">Q", cid) + blinded
        pt = json.dumps(values).encode()
        return nonce + nb.crypto_aead_xchacha20poly1305_ietf_encrypt(pt, aad, nonce, self.data_key)

    def reply(
        self,
        cid: int,
        public_key: bytes,
        message: bytes,
        records: Sequence[tuple[str, dict[str, Any]]],
        *,
        op_set: list[bytes] | None = None,
        rows: list[tuple[bytes, bytes]] | None = None,
    ) -> bytes:
        points = [message[i : i + 32] for i in range(0, len(message), 32)]
        op = op_set if op_set is not None else [self.blind(p) for p in points]
        if rows is None:
            rows = []
            for phone, values in records:
                blinded = self.blind(spec_hash("phone", phone))
                rows.append((blinded, self.seal(cid, blinded, values)))
            random.shuffle(rows)
        sealed_key = SealedBox(PublicKey(public_key)).encrypt(self.data_key)
        out = [b"DSPL\x01", struct.pack(">III", len(op), len(rows), len(sealed_key)), sealed_key, *op]
        for blinded, sealed in rows:
            out += [blinded, struct.pack(">I", len(sealed)), sealed]
        return b"".join(out)


# --- the world ---------------------------------------------------------------------------------------------
def phone(i: int) -> str:
    return f"+8613{i:09d}"


def world(ctx: Context, n: int = 30) -> tuple[list[int], list[int], dict[int, int]]:
    """``n`` customers with phones; 2 of 3 grant linkage to the partner. Returns subjects, linkers, grant ids."""
    from dataspace.ingest.service import ingest_rows

    load_demo_catalog(ctx)
    assert ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row(f"c{i:04d}") for i in range(n)]).accepted == n
    with ctx.db.transaction() as s:
        store_profiles(s, ctx.vault, [(f"c{i:04d}", {"phone": phone(i)}) for i in range(n)], ctx.keys.blind_index)
    from dataspace.subjects.models import Subject

    with ctx.db.session() as s:
        ids = dict(s.execute(select(Subject.blind_ref, Subject.id)).all())
    subjects = [ids[ctx.keys.blind_index(f"c{i:04d}")] for i in range(n)]
    linkers, grant_ids = [], {}
    with ctx.db.transaction() as s:
        for i, sid in enumerate(subjects):
            if i % 3:
                change = changes.grant(
                    s,
                    subject_id=sid,
                    request=changes.GrantRequest(purpose=PURPOSE, dimension="linkage", partner=PARTNER),
                    signer=ctx.keys.signing_key,
                )
                linkers.append(sid)
                grant_ids[sid] = change.grant.id
    return subjects, linkers, grant_ids


def partner_records(n: int) -> list[tuple[str, dict[str, Any]]]:
    """The partner knows the even-numbered customers and 10 strangers."""
    known = [(phone(i), {"policy_expiry_month": 1 + i % 12, "claims_band": "none"}) for i in range(0, n, 2)]
    strangers = [(f"+4930{i:08d}", {"policy_expiry_month": 5, "claims_band": "some"}) for i in range(10)]
    return known + strangers


def approved_contract(ctx: Context, **kw: Any) -> int:
    """A contract proposed with the partner columns declared, then approved (the columns with it)."""
    contract_id = propose(ctx, **kw)
    with ctx.db.transaction() as s:
        linkage.declare(s, principal=partner_principal(ctx), contract_id=contract_id, kind="phone", columns=COLUMNS)
    with ctx.db.transaction() as s:
        contracts.approve(s, principal=steward("alice"), contract_id=contract_id)
    return contract_id


def pkeys(ctx: Context) -> PartnerKeys:
    """The runs' key-encryption keys, beside the context's epoch keys (outside the database)."""
    return PartnerKeys.of(ctx.vault)


def start(ctx: Context, contract_id: int) -> Contribution:
    with ctx.db.transaction() as s:
        row = linkage.start(
            s,
            pkeys(ctx),
            principal=partner_principal(ctx),
            contract_id=contract_id,
            identifiers=linkage.profile_identifiers(ctx.vault),
        )
        s.expunge(row)
        return row


def message(ctx: Context, cid: int) -> bytes:
    with ctx.db.session() as s:
        return linkage.first_message(s, principal=partner_principal(ctx), contribution_id=cid)


def complete(ctx: Context, cid: int, reply: bytes, **kw: Any) -> linkage.Outcome:
    with ctx.db.transaction() as s:
        out = linkage.complete(s, pkeys(ctx), principal=partner_principal(ctx), contribution_id=cid, reply=reply, **kw)
        s.expunge(out.contribution)
        return out


def links(ctx: Context) -> set[int]:
    with ctx.db.session() as s:
        return set(s.scalars(select(Link.subject_id)))


def spent(ctx: Context) -> int:
    with ctx.db.session() as s:
        return int(s.scalar(select(func.sum(PrivacyBudget.micro_epsilon_spent))) or 0)


# --- tests -----------------------------------------------------------------------------------------------------
def test_links_exactly_the_consenting_customers_the_partner_knows(ctx: Context) -> None:
    subjects, linkers, _ = world(ctx)
    contract_id = approved_contract(ctx)
    run = start(ctx, contract_id)
    msg = message(ctx, run.id)
    assert len(msg) == 32 * 1024 == 32 * run.sent  # padded: the partner learns the count only coarsely

    # Only consenting customers' identifiers entered message 1: with the operator's scalar (test-only
    # access), every linker's H(y)^a is in it and no other customer's is.
    with ctx.db.session() as s:
        wrapped = s.get(Contribution, run.id).wrapped_scalar  # type: ignore[union-attr]
    a = pkeys(ctx).unwrap(run.id, wrapped, linkage._label(run.id, "scalar"))
    points = {msg[i : i + 32] for i in range(0, len(msg), 32)}
    for i, sid in enumerate(subjects):
        inside = nb.crypto_scalarmult_ed25519_noclamp(a, spec_hash("phone", phone(i))) in points
        assert inside == (sid in linkers)

    partner = SpecPartner()
    before = spent(ctx)
    out = complete(ctx, run.id, partner.reply(run.id, run.public_key, msg, partner_records(len(subjects))))
    expected = {sid for i, sid in enumerate(subjects) if i % 2 == 0 and sid in linkers}
    assert links(ctx) == expected
    assert out.contribution.status == "linked"
    assert out.contribution.matched == len(expected)
    assert out.noisy_matched >= 0
    assert spent(ctx) - before == contracts.to_micro(linkage.COUNT_EPSILON)  # the DP count is paid for

    # The partner's columns join to those subjects only, and each use is in their ledger.
    with ctx.db.transaction() as s:
        declared, values = linkage.partner_columns(s, pkeys(ctx), contract_id=contract_id, subject_ids=subjects)
    assert [c["key"] for c in declared] == ["policy_expiry_month", "claims_band"]
    assert set(values) == expected
    i0 = subjects.index(min(expected, key=subjects.index))
    assert values[subjects[i0]] == {"policy_expiry_month": 1 + i0 % 12, "claims_band": "none"}
    with ctx.db.session() as s:
        entries = list(s.scalars(select(TLogEntry.entry).where(TLogEntry.log == "usage")))
        shown = linkage.links_of(s, subject_id=next(iter(expected)))
    assert sum('"linkage:phone"' in e for e in entries) == len(expected)
    assert sum('"partner:claims_band"' in e for e in entries) == len(expected)
    assert shown
    assert shown[0]["partner"] == PARTNER
    assert shown[0]["matched_on"] == "phone"

    # The customer's access export lists the partner that linked records about them; others get no line.
    import json

    from dataspace.compliance.export import stream_export

    def exported(sid: int) -> list[dict[str, Any]]:
        lines = b"".join(stream_export(ctx.settings, ctx.db, ctx.vault, sid)).splitlines()
        return [json.loads(x)["record"] for x in lines if json.loads(x)["section"] == "partner_links"]

    assert [r["partner"] for r in exported(next(iter(expected)))] == [PARTNER]
    assert exported(next(s for s in subjects if s not in expected)) == []


def test_withdrawal_mid_protocol_and_after(ctx: Context) -> None:
    subjects, linkers, grant_ids = world(ctx)
    contract_id = approved_contract(ctx)
    run = start(ctx, contract_id)
    msg = message(ctx, run.id)
    known = [sid for i, sid in enumerate(subjects) if i % 2 == 0 and sid in linkers]
    quitter, later = known[0], known[1]
    with ctx.db.transaction() as s:  # between message 1 and the reply
        changes.withdraw(s, subject_id=quitter, grant_id=grant_ids[quitter], signer=ctx.keys.signing_key)
    partner = SpecPartner()
    complete(ctx, run.id, partner.reply(run.id, run.public_key, msg, partner_records(len(subjects))))
    assert quitter not in links(ctx)
    assert later in links(ctx)

    with ctx.db.transaction() as s:  # after linking: the link goes, and so does every later join
        change = changes.withdraw(s, subject_id=later, grant_id=grant_ids[later], signer=ctx.keys.signing_key)
        receipt_id = change.receipt_id
    assert later not in links(ctx)
    with ctx.db.transaction() as s:
        _, values = linkage.partner_columns(s, pkeys(ctx), contract_id=contract_id, subject_ids=subjects)
        assert later not in values
        assert quitter not in values
        assert consent_queries.get_receipt(s, subject_id=later, receipt_id=receipt_id) is not None  # signed like any


def test_revocation_crypto_shreds_the_partner_columns(ctx: Context) -> None:
    subjects, _, _ = world(ctx)
    contract_id = approved_contract(ctx)
    run = start(ctx, contract_id)
    partner = SpecPartner()
    complete(ctx, run.id, partner.reply(run.id, run.public_key, message(ctx, run.id), partner_records(len(subjects))))
    with ctx.db.session() as s:
        c = s.get(Contribution, run.id)
        assert c is not None
        assert c.wrapped_private_key is not None
        assert c.sealed_data_key is not None
        wrapped, sealed_key = c.wrapped_private_key, c.sealed_data_key
        blinded, sealed_row = s.execute(select(Link.blinded_id, Link.sealed_row)).first()  # type: ignore[misc]
    # Before: the server's keys open the copied row.
    from nacl.public import PrivateKey

    private = PrivateKey(pkeys(ctx).unwrap(run.id, wrapped, linkage._label(run.id, "private")))
    from clients.sdk._psi import open_row

    assert open_row(SealedBox(private).decrypt(sealed_key), run.id, blinded, sealed_row)

    with ctx.db.transaction() as s:
        revocation.revoke(s, principal=steward("alice"), contract_id=contract_id)
    with ctx.db.session() as s:
        c = s.get(Contribution, run.id)
        assert c is not None
        assert c.status == "shredded"
        assert c.wrapped_private_key is None
        assert c.sealed_data_key is None
        assert c.wrapped_scalar is None
        assert s.scalar(select(func.count()).select_from(Link)) == 0
        # Nothing left in the database opens the copied ciphertext: every key-bearing column of every
        # contribution is gone, and a fresh key (the only other thing the server could make) fails.
        leftover = [r for r in s.scalars(select(Contribution.wrapped_private_key)) if r is not None]
    assert leftover == []
    with pytest.raises(CryptoError):
        open_row(os.urandom(32), run.id, blinded, sealed_row)
    with ctx.db.transaction() as s:
        assert linkage.partner_columns(s, pkeys(ctx), contract_id=contract_id, subject_ids=subjects) == ([], {})


def test_a_contract_past_its_end_is_shredded_by_the_sweep(ctx: Context) -> None:
    from datetime import timedelta

    from dataspace.db import utcnow

    subjects, _, _ = world(ctx)
    contract_id = approved_contract(ctx)
    run = start(ctx, contract_id)
    p = SpecPartner()
    complete(ctx, run.id, p.reply(run.id, run.public_key, message(ctx, run.id), partner_records(len(subjects))))
    with ctx.db.transaction() as s:
        assert linkage.shred_ended(s) == 0  # still in force
    with ctx.db.transaction() as s:
        assert linkage.shred_ended(s, clock=lambda: utcnow() + timedelta(days=31)) == 1
    assert _counts(ctx, run.id) == ("shredded", 0)


def test_links_of_ended_grants_are_pruned_and_erasure_unlinks(ctx: Context) -> None:
    from datetime import timedelta

    from dataspace.compliance.service import erase_subject
    from dataspace.db import utcnow

    subjects, _, grant_ids = world(ctx)
    contract_id = approved_contract(ctx)
    run = start(ctx, contract_id)
    p = SpecPartner()
    complete(ctx, run.id, p.reply(run.id, run.public_key, message(ctx, run.id), partner_records(len(subjects))))
    linked = sorted(links(ctx))
    with ctx.db.transaction() as s:
        assert linkage.prune_links(s) == 0
    erased = linked[0]  # erasure withdraws the grant, which unlinks
    with ctx.db.transaction() as s:
        erase_subject(ctx.settings, ctx.keys, s, subject_id=erased, actor=steward("alice"))
    assert erased not in links(ctx)
    assert set(linked[1:]) == links(ctx)
    later = linked[1]  # a grant that runs out: the sweep prunes its link
    with ctx.db.transaction() as s:
        changes.renew(
            s,
            subject_id=later,
            grant_id=grant_ids[later],
            valid_until=utcnow() + timedelta(hours=1),
            signer=ctx.keys.signing_key,
        )
    with ctx.db.transaction() as s:
        assert linkage.prune_links(s, clock=lambda: utcnow() + timedelta(hours=2)) >= 1
    assert later not in links(ctx)


def _counts(ctx: Context, cid: int) -> tuple[str, int]:
    with ctx.db.session() as s:
        c = s.get(Contribution, cid)
        assert c is not None
        return c.status, int(s.scalar(select(func.count()).select_from(Link)) or 0)


def test_bad_replies_are_refused_whole(ctx: Context) -> None:
    subjects, _, _ = world(ctx)
    contract_id = approved_contract(ctx)
    run = start(ctx, contract_id)
    msg = message(ctx, run.id)
    p = SpecPartner()
    recs = partner_records(len(subjects))
    good_rows = []
    for ph, values in recs:
        blinded = p.blind(spec_hash("phone", ph))
        good_rows.append((blinded, p.seal(run.id, blinded, values)))
    ops = [p.blind(msg[i : i + 32]) for i in range(0, len(msg), 32)]
    bad_point = bytes(32)  # the identity's encoding is not a valid element
    bad = {
        "garbage": b"not a reply at all",
        "truncated": p.reply(run.id, run.public_key, msg, recs)[:-7],
        "short operator set": p.reply(run.id, run.public_key, msg, recs, op_set=ops[:-1]),
        "invalid point": p.reply(run.id, run.public_key, msg, recs, rows=[(bad_point, b"x" * 40), *good_rows]),
        "duplicate blinded id": p.reply(run.id, run.public_key, msg, recs, rows=[good_rows[0], *good_rows]),
        "columns off contract": SpecPartner().reply(
            run.id, run.public_key, msg, [(ph, {"policy_expiry_month": "soon"}) for ph, _ in recs]
        ),
        "row moved to another id": p.reply(
            run.id, run.public_key, msg, recs, rows=[(good_rows[1][0], good_rows[2][1]), good_rows[0], *good_rows[2:]]
        ),
    }
    for name, body in bad.items():
        with pytest.raises(InvalidInput):
            complete(ctx, run.id, body)
        assert _counts(ctx, run.id) == ("open", 0), name
    with pytest.raises(InvalidInput, match="limit"):
        complete(ctx, run.id, p.reply(run.id, run.public_key, msg, recs), max_bytes=1000)
    assert _counts(ctx, run.id) == ("open", 0)

    # A contract revoked between message 1 and the reply: the run is shredded, the reply refused.
    with ctx.db.transaction() as s:
        revocation.revoke(s, principal=steward("alice"), contract_id=contract_id)
    with pytest.raises(Conflict):
        complete(ctx, run.id, p.reply(run.id, run.public_key, msg, recs))
    assert _counts(ctx, run.id) == ("shredded", 0)


def test_columns_are_declared_before_approval_and_shown_to_customers(ctx: Context) -> None:
    world(ctx, n=3)
    bare = propose(ctx)
    with ctx.db.transaction() as s:
        contracts.approve(s, principal=steward("alice"), contract_id=bare)
    with ctx.db.transaction() as s, pytest.raises(Conflict):  # approved: too late to add columns
        linkage.declare(s, principal=partner_principal(ctx), contract_id=bare, kind="phone", columns=COLUMNS)
    with pytest.raises(Conflict):  # nothing declared: nothing to link
        start(ctx, bare)
    with ctx.db.transaction() as s, pytest.raises(InvalidInput):
        linkage.declare(
            s,
            principal=partner_principal(ctx),
            contract_id=propose(ctx),
            kind="phone",
            columns=[{"key": "x", "data_type": "integer", "meaning": ""}],  # customers must be told what it is
        )
    with ctx.db.session() as s:
        assert linkage.offers(s) == []  # proposed contracts are not offered to customers
    contract_id = approved_contract(ctx)
    with ctx.db.session() as s:
        (offer,) = linkage.offers(s)
    assert offer["partner"] == PARTNER
    assert offer["purpose"] == PURPOSE
    assert offer["columns"][0] == {"key": "policy_expiry_month", "meaning": "month your policy with us expires"}
    assert offer["grant"] == {"dimension": "linkage", "partner": PARTNER, "purpose": PURPOSE}
    assert contract_id


def test_a_refusal_does_not_depend_on_which_records_matched(ctx: Context) -> None:
    """The oracle a partner would try: put a bad row on one record and see whether the reply is refused. A
    bad row is refused whether its record is a consenting customer (phone 2) or not (a stranger, or a
    customer without the grant: phone 0), with the same problem."""
    subjects, linkers, _ = world(ctx)
    assert subjects[2] in linkers
    assert subjects[0] not in linkers
    contract_id = approved_contract(ctx)
    run = start(ctx, contract_id)
    msg = message(ctx, run.id)
    good = {"policy_expiry_month": 1, "claims_band": "none"}
    bad = {"policy_expiry_month": "soon", "claims_band": "none"}
    details = []
    for target in (phone(2), phone(0), "+493000000001"):
        recs = [(ph, bad if ph == target else good) for ph in (phone(2), phone(0), phone(4), "+493000000001")]
        with pytest.raises(InvalidInput) as refused:
            complete(ctx, run.id, SpecPartner().reply(run.id, run.public_key, msg, recs))
        details.append(refused.value.detail)
        assert _counts(ctx, run.id) == ("open", 0)
    assert len(set(details)) == 1


def test_linkage_grant_needs_one_named_partner(ctx: Context) -> None:
    subjects, _, _ = world(ctx, n=3)
    with ctx.db.transaction() as s, pytest.raises(InvalidInput):
        changes.grant(
            s,
            subject_id=subjects[0],
            request=changes.GrantRequest(purpose=PURPOSE, dimension="linkage", partner_category="insurer"),
            signer=ctx.keys.signing_key,
        )


def test_partner_cannot_tell_matched_from_unmatched(ctx: Context) -> None:
    """Two worlds that differ only in whether the partner's records are customers who granted linkage. What
    the partner receives (message 1, the run as the API shows it) has the same shape in both, and the tests a
    partner can run on it (is a point of message 1 one of my H(x) or H(x)^b, or related to it by my b?)
    come out the same: the blinded points are under the operator's fresh secret scalar."""
    subjects, linkers, _ = world(ctx)
    contract_id = approved_contract(ctx)
    p = SpecPartner()
    mine_customers = [(phone(i), {"policy_expiry_month": 1, "claims_band": "none"}) for i in range(len(subjects))]
    mine_strangers = [(f"+4930{i:08d}", {"policy_expiry_month": 1, "claims_band": "none"}) for i in range(30)]

    views = []
    for records in (mine_customers, mine_strangers):
        run = start(ctx, contract_id)
        msg = message(ctx, run.id)
        points = [msg[i : i + 32] for i in range(0, len(msg), 32)]
        own = {spec_hash("phone", ph) for ph, _ in records}
        own_b = {p.blind(h) for h in own}
        seen = {
            "size": len(msg),
            "plain_hits": sum(q in own for q in points),
            "blinded_hits": sum(q in own_b for q in points),
            "reblinded_hits": sum(p.blind(q) in own_b for q in points),
            "valid": all(nb.crypto_core_ed25519_is_valid_point(q) for q in points),
        }
        out = complete(ctx, run.id, p.reply(run.id, run.public_key, msg, records))
        shown = out.contribution
        seen["fields"] = (shown.status, shown.sent)
        views.append(seen)
        # After the reply the partner can fetch nothing more about the run than its DP count.
        with pytest.raises(Conflict):
            message(ctx, run.id)
    assert views[0] == views[1]
    assert views[0]["plain_hits"] == views[0]["blinded_hits"] == views[0]["reblinded_hits"] == 0
    assert len(linkers) < views[0]["size"] // 32  # the linkers hide among random padding


def test_sdk_runs_the_partner_side_over_http(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's partner side against the server: a linked run, a malformed reply and an oversized one as
    problems, and nothing of the partner's values in what the API shows."""
    from clients.sdk import ClientCredentials, PartnerClient
    from clients.sdk import InvalidInput as ClientInvalidInput
    from tests.factories.identities import make_client
    from tests.integration.oauth_server import running_server

    subjects, linkers, _ = world(ctx)
    contract_id = approved_contract(ctx)
    creds = make_client(ctx, "partner", partner_key=PARTNER)
    records = [(phone(2 * k), v) for k, (_, v) in enumerate(partner_records(len(subjects))[: len(subjects) // 2])]
    records += [("not a phone", {"policy_expiry_month": 1, "claims_band": "none"})]
    with (
        running_server(ctx) as (base, _),
        PartnerClient(base, ClientCredentials(creds.client.client_id, creds.secret or "")) as client,
    ):
        run = client.link(contract_id=contract_id, records=records)
        assert run.status == "linked"
        assert run.skipped == 1
        assert set(client.request("GET", f"/v1/partner/linkage/{run.id}")) == {
            "id",
            "contract_id",
            "kind",
            "status",
            "public_key",
            "sent",
            "columns",
            "noisy_matched",
        }
        assert links(ctx) == {sid for i, sid in enumerate(subjects) if i % 2 == 0 and sid in linkers}

        again = client.request("POST", "/v1/partner/linkage", json={"contract_id": contract_id})
        with pytest.raises(ClientInvalidInput):
            client.request(
                "PUT",
                f"/v1/partner/linkage/{again['id']}/reply",
                content=b"DSPL\x01garbage",
                headers={"Content-Type": "application/octet-stream"},
            )
        monkeypatch.setenv("DATASPACE_LINKAGE_MAX_REPLY_BYTES", "64")
        with pytest.raises(ClientInvalidInput, match="limit"):
            client.request(
                "PUT",
                f"/v1/partner/linkage/{again['id']}/reply",
                content=b"x" * 1000,
                headers={"Content-Type": "application/octet-stream"},
            )
        assert client.request("GET", f"/v1/partner/linkage/{again['id']}")["status"] == "open"


def test_the_partners_own_job_sees_its_columns_for_linked_subjects_only(ctx: Context) -> None:
    """A job under the contract gets ``partner__*`` columns (coarsened, nulls for the unlinked) inside the
    sandbox; each subject whose partner values were joined has that use in its ledger under the job."""
    import json

    from dataspace.jobs import service as jobs
    from dataspace.jobs.models import Decision
    from tests.factories import jobs as js

    w = js.build_world(ctx, n=60)
    with ctx.db.transaction() as s:
        store_profiles(s, ctx.vault, [(f"c{i:05d}", {"phone": phone(i)}) for i in range(60)], ctx.keys.blind_index)
        linked_ok = set()
        for i, sid in enumerate(w.subjects):
            if i % 2 == 0:
                changes.grant(
                    s,
                    subject_id=sid,
                    request=changes.GrantRequest(purpose=PURPOSE, dimension="linkage", partner=PARTNER),
                    signer=ctx.keys.signing_key,
                )
                linked_ok.add(sid)
    contract_id = approved_contract(ctx)
    run = start(ctx, contract_id)
    records = [(phone(i), {"policy_expiry_month": 1 + i % 12, "claims_band": "some"}) for i in range(60)]
    p = SpecPartner()
    complete(ctx, run.id, p.reply(run.id, run.public_key, message(ctx, run.id), records))
    assert links(ctx) == linked_ok

    with pytest.raises(InvalidInput):  # a model that does not take the partner columns is refused
        js.upload_onnx(ctx, contract_id)
    model_id = js.upload_onnx(ctx, contract_id, js.logistic_regression([*js.WEIGHTS, 0.2, 0.1], js.BIAS))
    with ctx.db.transaction() as s:
        job_id = jobs.submit(s, principal=partner_principal(ctx), model_id=model_id).id
    assert ctx.jobs.run_job(job_id).status == "succeeded"
    with ctx.db.session() as s:
        decided = set(s.scalars(select(Decision.subject_id).where(Decision.job_id == job_id)))
        used = {
            json.loads(e)["subject_id"]
            for e in s.scalars(select(TLogEntry.entry).where(TLogEntry.log == "usage"))
            if '"partner:policy_expiry_month"' in e and json.loads(e)["job_id"] == job_id
        }
    assert decided
    assert used == decided & linked_ok

    # The same job run in shards (each shard joins the columns of its own subjects).

    with ctx.db.transaction() as s:
        sharded = jobs.submit(s, principal=partner_principal(ctx), model_id=model_id).id
    assert ctx.jobs.run_job(sharded, shard_subjects=15).status == "succeeded"
    with ctx.db.session() as s:
        decided = set(s.scalars(select(Decision.subject_id).where(Decision.job_id == sharded)))
        used = {
            json.loads(e)["subject_id"]
            for e in s.scalars(select(TLogEntry.entry).where(TLogEntry.log == "usage"))
            if '"partner:policy_expiry_month"' in e and json.loads(e)["job_id"] == sharded
        }
    assert decided
    assert used == decided & linked_ok


def test_customer_grants_reads_and_withdraws_linkage_over_http(ctx: Context) -> None:
    """The customer's side through the API: the offer in the data manual, the grant with its signed receipt,
    the link shown after a run, and withdrawal removing it."""
    from fastapi.testclient import TestClient

    from dataspace.app import create_app
    from tests.factories.identities import bearer, issue_token

    subjects, _, _ = world(ctx, n=6)
    contract_id = approved_contract(ctx)
    me = subjects[3]  # not a linker in `world`
    client = TestClient(create_app(ctx))
    headers = bearer(issue_token(ctx, "customer", subject_id=me))
    (offer,) = client.get("/v1/me/linkage", headers=headers).json()["offers"]
    assert offer["columns"][1]["meaning"] == "how many claims"
    r = client.post("/v1/me/consents", json={"purpose": PURPOSE, **offer["grant"]}, headers=headers)
    assert r.status_code in (200, 201), r.text
    change = r.json()
    receipt = client.get(f"/v1/me/receipts/{change['receipt_id']}", headers=headers)
    assert receipt.status_code == 200
    assert receipt.json()["signature"]

    run = start(ctx, contract_id)
    p = SpecPartner()
    complete(ctx, run.id, p.reply(run.id, run.public_key, message(ctx, run.id), partner_records(6)))
    # phone(3) is odd: the partner does not know customer 3; link customer 3 through a second run that does.
    run = start(ctx, contract_id)
    records = [(phone(3), {"policy_expiry_month": 4, "claims_band": "none"})]
    complete(ctx, run.id, SpecPartner().reply(run.id, run.public_key, message(ctx, run.id), records))
    (link,) = client.get("/v1/me/linkage", headers=headers).json()["links"]
    assert link["partner"] == PARTNER
    assert link["partner_columns"] == ["policy_expiry_month", "claims_band"]
    # The partner's values are never shown through any API, the customer's own view included.
    assert set(link) == {"partner", "partner_name", "purpose", "matched_on", "linked_at", "partner_columns"}

    gone = client.delete(f"/v1/me/consents/{change['grant']['id']}", headers=headers)
    assert gone.status_code == 200, gone.text
    assert client.get("/v1/me/linkage", headers=headers).json()["links"] == []


def test_dataspace_remote_link_runs_the_partner_side_from_a_csv(ctx: Context, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from dataspace.cli import app
    from tests.factories.identities import make_client
    from tests.integration.oauth_server import running_server

    subjects, linkers, _ = world(ctx, n=12)
    contract_id = approved_contract(ctx)
    creds = make_client(ctx, "partner", partner_key=PARTNER)
    csv_file = tmp_path / "mine.csv"
    lines = ["mobile,policy_expiry_month,claims_band"]
    lines += [f"{phone(i).replace('+86', '0')},{1 + i % 12},none" for i in range(12)]  # national numbers
    lines += ["not a number,3,some"]
    csv_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with running_server(ctx) as (base, _):
        env = {
            "DATASPACE_URL": base,
            "DATASPACE_CLIENT_ID": creds.client.client_id,
            "DATASPACE_CLIENT_SECRET": creds.secret or "",
        }
        args = ["remote", "link", "--contract", str(contract_id), "--records", str(csv_file)]
        result = CliRunner().invoke(app, [*args, "--id-column", "mobile", "--country-code", "86"], env=env)
    assert result.exit_code == 0, result.output
    assert "linked" in result.output
    assert "1 records skipped" in result.output
    assert links(ctx) == set(linkers) & set(subjects)
