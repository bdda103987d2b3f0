"""Linkage service: run the operator's side of the PSI, store the links and the partner's sealed rows, unlink on
withdrawal, shred on revocation or expiry, and join the partner's columns at read time.

Invariants (every function runs in the caller's transaction; services never commit):
- only identifiers of subjects with an active linkage grant for (partner, contract purpose) enter message 1;
- at the reply, matches are kept only for subjects whose grant is STILL active (a withdrawal between the
  two messages excludes the customer), and a reply is stored whole or not at all (any bad row, a contract
  no longer approved, a budget too small: nothing is stored and the run stays open or shredded as it was);
- every row of a reply is opened once, to check it against the declaration (so whether a reply is refused
  does not depend on which records matched); only matched rows of consenting subjects are kept, and they are
  opened again only in ``partner_columns`` (the emission of the partner's own jobs, real-time decisions);
- after ``shred_contract`` no key that opens a contribution's rows exists in the database, and once the
  shredding has committed (or the sweep has run) no key that opens them exists anywhere: each run's
  key-encryption key lives outside the database (``dataspace.linkage.keys``), so a backup taken before the
  shredding stays unreadable after a restore.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import opendp.prelude as dp
import orjson
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox
from sqlalchemy import delete, event, insert, or_, select, update
from sqlalchemy.orm import Session

from clients.sdk._psi import KINDS, open_row
from consent.model import KEY_RE
from dataspace.agreements import budget, contracts
from dataspace.agreements.models import Contract
from dataspace.audit import record_event
from dataspace.db import utcnow
from dataspace.emission.service import _fetch
from dataspace.errors import Conflict, Forbidden, InvalidInput, NotFound
from dataspace.grants.models import ConsentGrant
from dataspace.linkage import grants, protocol
from dataspace.linkage.keys import PartnerKeys
from dataspace.linkage.models import Contribution, Declaration, Link
from dataspace.partners.models import Partner
from dataspace.principal import Principal
from dataspace.subjects.ids import ascending_distinct
from dataspace.subjects.models import Subject
from dataspace.usage.service import UsageEntry, record_usage
from dataspace.vault import DecryptionError, Vault

dp.enable_features("contrib")

Clock = Callable[[], datetime]
# subject ids -> the raw identifier of each (of one kind); subjects without one are left out.
IdentifierSource = Callable[[Session, Sequence[int], str], dict[int, str]]

MAX_REPLY_BYTES = 256 * 1024 * 1024
MAX_ROW_BYTES = 4096
MAX_RECORDS = 5_000_000
MAX_COLUMNS = 32
# What the partner's DP count of matches costs from its (partner, purpose) budget.
COUNT_EPSILON = 0.1
DATA_TYPES = ("integer", "number", "boolean", "string")
TRANSFORMS = ("identity", "bin", "group", "top_code")


# --- server-held keys (wrapped under the run's key-encryption key, kept outside the database) -----------------
def _label(contribution_id: int, what: str) -> bytes:
    return b"linkage/%d/%s" % (contribution_id, what.encode())


# --- declarations -----------------------------------------------------------------------------------------------
def check_columns(columns: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The partner's column declaration, like catalog fields: key, data type, meaning (shown to customers),
    allowed transforms (the coarsest view a model may get), optional allowed values or bounds."""
    if not isinstance(columns, list) or not 1 <= len(columns) <= MAX_COLUMNS:
        raise InvalidInput(f"declare between 1 and {MAX_COLUMNS} partner columns")
    out: list[dict[str, Any]] = []
    for c in columns:
        if not isinstance(c, Mapping):
            raise InvalidInput("each partner column is an object")
        key, data_type, meaning = c.get("key"), c.get("data_type"), c.get("meaning")
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise InvalidInput("a partner column key is not a valid key")
        if data_type not in DATA_TYPES:
            raise InvalidInput(f"partner column {key!r}: data_type is one of {', '.join(DATA_TYPES)}")
        if not isinstance(meaning, str) or not meaning.strip():
            raise InvalidInput(f"partner column {key!r}: say what it means (shown to customers)")
        transforms = c.get("transforms", {"identity": {}})
        if not isinstance(transforms, Mapping) or not transforms or any(t not in TRANSFORMS for t in transforms):
            raise InvalidInput(f"partner column {key!r}: transforms are among {', '.join(TRANSFORMS)}")
        values = c.get("values")
        if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
            raise InvalidInput(f"partner column {key!r}: values is a list of strings")
        out.append(
            {
                "key": key,
                "data_type": data_type,
                "meaning": meaning.strip()[:500],
                "transforms": dict(transforms),
                **({"values": values} if values is not None else {}),
            }
        )
    if len({c["key"] for c in out}) != len(out):
        raise InvalidInput("partner column keys must be unique")
    return out


def _row_fits(columns: Sequence[Mapping[str, Any]], row: Mapping[str, Any]) -> bool:
    if set(row) != {c["key"] for c in columns}:
        return False
    for c in columns:
        v = row[c["key"]]
        if v is None:
            continue
        t = c["data_type"]
        if t == "boolean":
            ok = isinstance(v, bool)
        elif t == "integer":
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif t == "number":
            ok = isinstance(v, int | float) and not isinstance(v, bool)
        else:
            ok = isinstance(v, str) and len(v) <= 200 and ("values" not in c or v in c["values"])
        if not ok:
            return False
    return True


# --- who may be linked ------------------------------------------------------------------------------------------
def _linkable(partner_key: Any, purpose_key: Any, now: datetime) -> Any:
    return (
        select(ConsentGrant.subject_id)
        .join(Subject, Subject.id == ConsentGrant.subject_id)
        .where(
            ConsentGrant.dimension_key == grants.DIMENSION,
            ConsentGrant.partner_key == partner_key,
            ConsentGrant.purpose_key == purpose_key,
            ConsentGrant.state == "active",
            ConsentGrant.valid_from <= now,
            or_(ConsentGrant.valid_until.is_(None), ConsentGrant.valid_until > now),
            Subject.erased_at.is_(None),
        )
    )


def linkable_subjects(session: Session, *, partner_key: str, purpose_key: str, now: datetime) -> list[int]:
    """Subjects with an active linkage grant for this partner and purpose, ascending."""
    return sorted(session.scalars(_linkable(partner_key, purpose_key, now)))


def profile_identifiers(vault: Vault, *, chunk: int = 5000) -> IdentifierSource:
    """Identifiers read from the subjects' sealed profiles (the profile value named after the kind), in
    chunks through emission's bulk path (one query and one bulk unwrap per chunk)."""

    def source(session: Session, subject_ids: Sequence[int], kind: str) -> dict[int, str]:
        out: dict[int, str] = {}
        ids = ascending_distinct(subject_ids)
        for start in range(0, ids.size, chunk):
            found, epochs, wrapped, sealed = _fetch(session, ids[start : start + chunk])
            sids = found.tolist()
            for sid, dek, blob in zip(sids, vault.unwrap_all(sids, epochs, wrapped), sealed, strict=True):
                if dek is None:
                    continue  # shredded or retired meanwhile: not linkable
                try:
                    value = orjson.loads(Vault.open(dek, blob, sid)).get(kind)
                except DecryptionError:
                    continue
                if isinstance(value, str):
                    out[sid] = value
        return out

    return source


# --- the run ----------------------------------------------------------------------------------------------------
def _partner(session: Session, principal: Principal) -> Partner:
    if principal.partner_id is None:
        raise Forbidden()
    partner = session.get(Partner, principal.partner_id)
    if partner is None or partner.status != "active":
        raise Forbidden()
    return partner


def declare(
    session: Session,
    *,
    principal: Principal,
    contract_id: int,
    kind: str,
    columns: Sequence[Mapping[str, Any]],
    clock: Clock = utcnow,
) -> Declaration:
    """Declare (or re-declare) the partner columns of one of the partner's contracts while it is proposed:
    the stewards approve them with the contract; after approval they are fixed."""
    _partner(session, principal)
    contract = contracts.get_owned(session, principal=principal, contract_id=contract_id)
    if contract.status != "proposed":
        raise Conflict(f"contract {contract.id} is {contract.status}; partner columns are declared before approval")
    if kind not in KINDS:
        raise InvalidInput(f"kind is one of {', '.join(KINDS)}")
    declared = check_columns(list(columns))
    row = session.get(Declaration, contract.id)
    if row is None:
        row = Declaration(contract_id=contract.id)
        session.add(row)
    row.kind, row.columns, row.declared_by, row.declared_at = kind, declared, principal.actor, clock()
    session.flush()
    record_event(
        session,
        actor=principal,
        action="linkage.declared",
        target=f"contract:{contract.id}",
        details={"kind": kind, "columns": [c["key"] for c in declared]},
    )
    return row


def declaration(session: Session, *, contract_id: int) -> Declaration | None:
    return session.get(Declaration, contract_id)


def start(
    session: Session,
    keys: PartnerKeys,
    *,
    principal: Principal,
    contract_id: int,
    identifiers: IdentifierSource,
    clock: Clock = utcnow,
) -> Contribution:
    """Open a run under an approved contract that declared partner columns: message 1 over the identifiers
    of the customers who granted linkage to this partner for the contract's purpose."""
    now = clock()
    partner = _partner(session, principal)
    contract = contracts.get_owned(session, principal=principal, contract_id=contract_id)
    contracts.require_usable(contract, now)
    found = session.get(Declaration, contract.id)
    if found is None:
        raise Conflict(f"contract {contract.id} declares no partner columns")
    kind, declared = found.kind, list(found.columns)
    subjects = linkable_subjects(session, partner_key=partner.key, purpose_key=contract.purpose_key, now=now)
    first = protocol.first_message(kind, identifiers(session, subjects, kind))
    private = PrivateKey.generate()
    row = Contribution(
        partner_id=partner.id,
        contract_id=contract.id,
        kind=kind,
        columns=declared,
        status="open",
        public_key=bytes(private.public_key),
        sent=int(first.order.size),
        created_by=principal.actor,
        created_at=now,
    )
    session.add(row)
    session.flush()
    keys.create(row.id)
    row.wrapped_private_key = keys.wrap(row.id, bytes(private), _label(row.id, "private"))
    row.wrapped_scalar = keys.wrap(row.id, first.scalar, _label(row.id, "scalar"))
    row.message = first.points
    row.order = zlib.compress(first.order.astype("<i8").tobytes())
    session.flush()
    record_event(
        session,
        actor=principal,
        action="linkage.started",
        target=f"contribution:{row.id}",
        details={"contract_id": contract.id, "kind": kind, "sent": row.sent},
    )
    return row


def get_owned(session: Session, *, principal: Principal, contribution_id: int) -> Contribution:
    row = session.get(Contribution, contribution_id)
    if row is None or principal.partner_id is None or row.partner_id != principal.partner_id:
        raise NotFound("no such linkage run")
    return row


def first_message(session: Session, *, principal: Principal, contribution_id: int) -> bytes:
    row = get_owned(session, principal=principal, contribution_id=contribution_id)
    if row.status != "open" or row.message is None:
        raise Conflict(f"linkage run {row.id} is {row.status}")
    return row.message


def _noisy_count(count: int, epsilon: float) -> int:
    meas = dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=1.0 / epsilon)
    return max(0, int(meas(count)))


@dataclass(frozen=True)
class Outcome:
    contribution: Contribution
    noisy_matched: int


def complete(
    session: Session,
    keys: PartnerKeys,
    *,
    principal: Principal,
    contribution_id: int,
    reply: bytes,
    max_bytes: int = MAX_REPLY_BYTES,
    clock: Clock = utcnow,
) -> Outcome:
    """Take message 2: match, keep the rows of consenting matched subjects, charge and release a DP count."""
    now = clock()
    if len(reply) > max_bytes:
        raise InvalidInput(f"the reply is larger than the limit of {max_bytes} bytes")
    partner = _partner(session, principal)
    row = get_owned(session, principal=principal, contribution_id=contribution_id)
    # The contract's row lock orders this against a revocation: revoked first means shredded here.
    contract = session.scalar(select(Contract).where(Contract.id == row.contract_id).with_for_update())
    assert contract is not None
    session.refresh(row)
    if row.status != "open" or row.wrapped_scalar is None or row.order is None or row.wrapped_private_key is None:
        raise Conflict(f"linkage run {row.id} is {row.status}")
    contracts.require_usable(contract, now)
    try:
        parsed = protocol.decode_reply(reply, max_row_bytes=MAX_ROW_BYTES)
    except protocol.MalformedMessage as exc:
        raise InvalidInput(f"malformed reply: {exc}") from None
    if len(parsed.records) > MAX_RECORDS:
        raise InvalidInput(f"more than {MAX_RECORDS} records")
    order = np.frombuffer(zlib.decompress(row.order), dtype="<i8")
    try:
        scalar = keys.unwrap(row.id, row.wrapped_scalar, _label(row.id, "scalar"))
        private = PrivateKey(keys.unwrap(row.id, row.wrapped_private_key, _label(row.id, "private")))
    except DecryptionError:  # its key was destroyed (shredded by a revocation racing this reply)
        raise Conflict(f"linkage run {row.id} is shredded") from None
    try:
        matches = protocol.match(scalar, order, parsed)
    except protocol.MalformedMessage as exc:
        raise InvalidInput(f"malformed reply: {exc}") from None
    try:
        data_key = SealedBox(private).decrypt(parsed.sealed_data_key)
    except CryptoError:
        raise InvalidInput("the data key is not sealed to this run's public key") from None
    # Every row is checked, matched or not: a refusal that depended on which rows matched would tell the
    # partner which of its records are customers. An unmatched row's values are dropped right here.
    for blinded, sealed in parsed.records:
        try:
            values = open_row(data_key, row.id, blinded, sealed)
        except (CryptoError, ValueError):
            raise InvalidInput("a sealed row does not open under the contribution's data key") from None
        if not _row_fits(row.columns, values):
            raise InvalidInput("a row does not match the declared partner columns")
    # Withdrawal between message 1 and now: only subjects whose grant is still active are linked.
    still = set(linkable_subjects(session, partner_key=partner.key, purpose_key=contract.purpose_key, now=now))
    links: list[dict[str, Any]] = []
    for i, sid in matches:
        if sid not in still:
            continue
        blinded, sealed = parsed.records[i]
        links.append(
            {
                "contribution_id": row.id,
                "subject_id": sid,
                "blinded_id": blinded,
                "sealed_row": sealed,
                "linked_at": now,
            }
        )
    micro = contracts.to_micro(COUNT_EPSILON)
    budget.charge(session, partner_id=partner.id, purpose_key=contract.purpose_key, micro=micro)
    noisy = _noisy_count(len(links), COUNT_EPSILON)
    # A new run replaces the contract's earlier one (its rows are shredded, not merged).
    for old in session.scalars(
        select(Contribution).where(
            Contribution.contract_id == row.contract_id, Contribution.id != row.id, Contribution.status == "linked"
        )
    ):
        _shred(session, old, now, keys)
    if links:
        session.execute(insert(Link), links)
    row.status = "linked"
    row.sealed_data_key = parsed.sealed_data_key
    row.wrapped_scalar = None
    row.message = None
    row.order = None
    row.matched = len(links)
    row.noisy_matched = noisy
    row.linked_at = now
    session.flush()
    record_usage(
        session,
        (
            UsageEntry(
                job_id=0,
                subject_id=link["subject_id"],
                fields=(f"linkage:{row.kind}",),
                partner=partner.key,
                purpose=contract.purpose_key,
                decision="linked",
            )
            for link in links
        ),
        at=now,
    )
    record_event(
        session,
        actor=principal,
        action="linkage.linked",
        target=f"contribution:{row.id}",
        details={"contract_id": contract.id, "records": len(parsed.records), "epsilon": COUNT_EPSILON},
    )
    return Outcome(row, noisy)


# --- unlinking and shredding ------------------------------------------------------------------------------------
def unlink(session: Session, *, subject_id: int, partner_key: str, purpose_key: str) -> int:
    """Remove the subject's links to this partner's contributions under contracts of this purpose (a
    withdrawn linkage grant); returns how many were removed."""
    ids = (
        select(Contribution.id)
        .join(Contract, Contract.id == Contribution.contract_id)
        .join(Partner, Partner.id == Contribution.partner_id)
        .where(Partner.key == partner_key, Contract.purpose_key == purpose_key)
    )
    result = session.execute(
        delete(Link)
        .where(Link.subject_id == subject_id, Link.contribution_id.in_(ids))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


_PENDING = "linkage.destroy_after_commit"


def _destroy_after_commit(session: Session, keys: PartnerKeys, contribution_id: int) -> None:
    """Destroy the run's key-encryption key once this transaction has committed (not before: a shredding that
    rolled back must not leave a live run unreadable). A crash in between is the sweep's to finish."""
    pending: list[tuple[PartnerKeys, int]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []

        def committed(s: Session) -> None:
            for store, cid in s.info.pop(_PENDING, []):
                store.destroy(cid)

        def rolled_back(s: Session) -> None:
            s.info.pop(_PENDING, None)

        event.listen(session, "after_commit", committed, once=True)
        event.listen(session, "after_rollback", rolled_back, once=True)
    pending.append((keys, contribution_id))


def _shred(session: Session, row: Contribution, now: datetime, keys: PartnerKeys | None) -> None:
    session.execute(delete(Link).where(Link.contribution_id == row.id).execution_options(synchronize_session=False))
    session.execute(
        update(Contribution)
        .where(Contribution.id == row.id)
        .values(
            status="shredded",
            wrapped_private_key=None,
            sealed_data_key=None,
            wrapped_scalar=None,
            message=None,
            order=None,
            shredded_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.expire(row)
    if keys is not None:
        _destroy_after_commit(session, keys, row.id)


def shred_contract(
    session: Session, *, contract_id: int, keys: PartnerKeys | None = None, clock: Clock = utcnow
) -> int:
    """Crypto-shred every contribution under the contract (revoked or ended); returns how many. The rows are
    unreadable in the live database at once; the runs' keys are destroyed after the commit when ``keys`` is
    given, else by the next ``destroy_shredded`` sweep (the background task, every minute)."""
    now = clock()
    rows = list(
        session.scalars(
            select(Contribution).where(Contribution.contract_id == contract_id, Contribution.status != "shredded")
        )
    )
    for row in rows:
        _shred(session, row, now, keys)
    return len(rows)


def prune_links(session: Session, *, clock: Clock = utcnow) -> int:
    """Delete the links of customers whose linkage grant is no longer active (expired, or withdrawn by a path
    that did not unlink, such as an erasure of an already-ended grant); returns how many."""
    now = clock()
    stale = [
        (cid, sid)
        for cid, sid in session.execute(
            select(Link.contribution_id, Link.subject_id)
            .join(Contribution, Contribution.id == Link.contribution_id)
            .join(Partner, Partner.id == Contribution.partner_id)
            .join(Contract, Contract.id == Contribution.contract_id)
            .where(
                ~_linkable(Partner.key, Contract.purpose_key, now)
                .where(ConsentGrant.subject_id == Link.subject_id)
                .exists()
            )
        )
    ]
    for cid, sid in stale:
        session.execute(delete(Link).where(Link.contribution_id == cid, Link.subject_id == sid))
    return len(stale)


def shred_ended(session: Session, *, keys: PartnerKeys | None = None, clock: Clock = utcnow) -> int:
    """Shred the contributions of contracts past their validity or no longer approved, and prune the links of
    customers whose grant ended (a periodic sweep)."""
    prune_links(session, clock=clock)
    now = clock()
    ended = select(Contract.id).where(or_(Contract.valid_until <= now, Contract.status.in_(("revoked", "rejected"))))
    ids = set(
        session.scalars(
            select(Contribution.contract_id).where(
                Contribution.status != "shredded", Contribution.contract_id.in_(ended)
            )
        )
    )
    return sum(shred_contract(session, contract_id=c, keys=keys, clock=clock) for c in ids)


def destroy_shredded(session: Session, keys: PartnerKeys) -> int:
    """Destroy the key-encryption keys of shredded runs that still exist (a shredding that committed without
    its key's destruction: no ``keys`` given, or a crash after the commit); returns how many."""
    held = keys.held()
    if not held:
        return 0
    done = set(
        session.scalars(select(Contribution.id).where(Contribution.id.in_(held), Contribution.status == "shredded"))
    )
    for cid in done:
        keys.destroy(cid)
    return len(done)


def reconcile(session: Session, keys: PartnerKeys, *, clock: Clock = utcnow) -> list[int]:
    """Shred every run whose key-encryption key is gone (a database restored from a backup taken before the
    run was shredded, or a shredding whose key was destroyed and whose commit failed): its wrapped keys and
    links are deleted and its status says so. Returns the runs shredded."""
    now = clock()
    live = list(session.scalars(select(Contribution).where(Contribution.status.in_(("open", "linked")))))
    # The keys are listed after the rows: a run's key is created before its row commits, so every run read
    # above has its key listed unless it is really gone (a run starting meanwhile is not shredded).
    held = keys.held()
    rows = [row for row in live if row.id not in held and not keys.has(row.id)]
    for row in rows:
        _shred(session, row, now, None)
    return [row.id for row in rows]


# --- the read-time join (emission of the partner's own jobs) --------------------------------------------------------
def partner_columns(
    session: Session,
    keys: PartnerKeys,
    *,
    contract_id: int,
    subject_ids: Iterable[int],
    job_id: int = 0,
    clock: Clock = utcnow,
) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]]]:
    """The declared columns and, per subject, the partner's values: only under the contract's own linked
    contribution, only for subjects whose linkage grant is active now. Each use is put in the ledger."""
    now = clock()
    row = session.scalar(
        select(Contribution).where(Contribution.contract_id == contract_id, Contribution.status == "linked")
    )
    if row is None or row.wrapped_private_key is None or row.sealed_data_key is None:
        return [], {}
    contract = session.get(Contract, contract_id)
    partner = session.get(Partner, row.partner_id)
    if contract is None or partner is None:
        return [], {}
    wanted = set(subject_ids)
    allowed = set(linkable_subjects(session, partner_key=partner.key, purpose_key=contract.purpose_key, now=now))
    try:
        private = PrivateKey(keys.unwrap(row.id, row.wrapped_private_key, _label(row.id, "private")))
    except DecryptionError:  # the run's key is destroyed: shredded, whatever the row still says
        return [], {}
    data_key = SealedBox(private).decrypt(row.sealed_data_key)
    out: dict[int, dict[str, Any]] = {}
    for sid, blinded, sealed in session.execute(
        select(Link.subject_id, Link.blinded_id, Link.sealed_row).where(Link.contribution_id == row.id)
    ):
        if sid in wanted and sid in allowed:
            out[sid] = open_row(data_key, row.id, blinded, sealed)
    fields = tuple(f"partner:{c['key']}" for c in row.columns)
    record_usage(
        session,
        (
            UsageEntry(job_id=job_id, subject_id=sid, fields=fields, partner=partner.key, purpose=contract.purpose_key)
            for sid in sorted(out)
        ),
        at=now,
    )
    return list(row.columns), out


# --- what customers are shown -----------------------------------------------------------------------------------
def offers(session: Session) -> list[dict[str, Any]]:
    """For the data manual: each approved contract that declares partner columns, what the partner brings
    (the columns and their meaning) and for which purpose, so a customer knows what a linkage grant lets in
    before any linkage runs."""
    rows = session.execute(
        select(Declaration, Partner.key, Partner.name, Contract.purpose_key)
        .join(Contract, Contract.id == Declaration.contract_id)
        .join(Partner, Partner.id == Contract.partner_id)
        .where(Contract.status == "approved", Contract.valid_until > utcnow())
        .order_by(Declaration.contract_id)
    )
    return [
        {
            "partner": key,
            "partner_name": name,
            "purpose": purpose,
            "identifier": c.kind,
            "columns": [{"key": col["key"], "meaning": col["meaning"]} for col in c.columns],
            "grant": {"dimension": grants.DIMENSION, "partner": key, "purpose": purpose},
        }
        for c, key, name, purpose in rows
    ]


def links_of(session: Session, *, subject_id: int) -> list[dict[str, Any]]:
    """Which partners linked records about this subject (for the customer's own view and export)."""
    rows = session.execute(
        select(Partner.key, Partner.name, Contract.purpose_key, Contribution.kind, Link.linked_at, Contribution.columns)
        .join(Contribution, Contribution.id == Link.contribution_id)
        .join(Partner, Partner.id == Contribution.partner_id)
        .join(Contract, Contract.id == Contribution.contract_id)
        .where(Link.subject_id == subject_id)
        .order_by(Link.linked_at)
    )
    return [
        {
            "partner": key,
            "partner_name": name,
            "purpose": purpose,
            "matched_on": kind,
            "linked_at": at.isoformat(),
            "partner_columns": [c["key"] for c in columns],
        }
        for key, name, purpose, kind, at, columns in rows
    ]
