"""Revoking a data contract. It sits above the contract's own module (``dataspace.agreements.contracts``) and
the linkage service (``dataspace.linkage``, which reads contracts), because a revocation also shreds the
partner's linked contributions under the contract in the same transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from dataspace.agreements import contracts
from dataspace.agreements.models import Contract
from dataspace.audit import record_event
from dataspace.db import utcnow
from dataspace.errors import Conflict
from dataspace.linkage.service import shred_contract
from dataspace.principal import Principal


def revoke(session: Session, *, principal: Principal, contract_id: int, reason: str = "") -> Contract:
    """Withdraw an approved contract: no new job may start under it (running jobs fail before storing)."""
    contracts.require_steward(principal)
    contract = contracts.lock(session, contract_id)
    if contract.status != "approved":
        raise Conflict(f"contract is {contract.status}; only an approved contract can be revoked")
    contract.status = "revoked"
    contract.decided_at = utcnow()
    contract.decided_by = principal.actor
    contract.decision_reason = reason[:1000]
    session.flush()
    shred_contract(session, contract_id=contract.id)  # the partner's own columns go with the contract
    record_event(session, actor=principal, action="contract.revoked", target=f"contract:{contract.id}")
    return contract
