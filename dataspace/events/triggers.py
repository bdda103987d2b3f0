"""Business events that trigger real-time decisions (issue 17 part 2, ``dataspace.realtime``).

A data contract with a decision service names the event types that trigger it (``decision_service.events``).
When the operator publishes such an event about one customer, every approved data contract naming its type
is asked for that customer's decision, after the event committed; the answers go back to the operator in the
publish response (and stay readable at ``/v1/decisions``), never to a partner. Events a partner publishes
name no customer, so they trigger nothing. A failed decision does not undo the published event: its error
code is reported beside the others.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from dataspace.agreements.models import Contract
from dataspace.db import Database
from dataspace.errors import DataspaceError
from dataspace.groupcommit import GroupCommit
from dataspace.keys import KeyRing
from dataspace.principal import Principal
from dataspace.realtime import DecisionService, decide
from dataspace.vault import Vault

log = logging.getLogger("dataspace.events")


def decision_contracts(db: Database, event_type: str) -> list[int]:
    with db.session() as session:
        rows = session.scalars(
            select(Contract).where(Contract.status == "approved", Contract.decision_service.is_not(None))
        )
        return [c.id for c in rows if event_type in (c.decision_service or {}).get("events", [])]


def decide_on(
    service: DecisionService,
    db: Database,
    keys: KeyRing,
    vault: Vault,
    writes: GroupCommit,
    *,
    principal: Principal,
    event_id: str,
    event_type: str,
    subject_id: int | None,
) -> list[dict[str, Any]]:
    if principal.role != "steward" or subject_id is None:
        return []
    answers: list[dict[str, Any]] = []
    for contract_id in decision_contracts(db, event_type):
        try:
            outcome = decide(
                service,
                db,
                keys,
                vault,
                writes,
                principal=principal,
                contract_id=contract_id,
                event_id=event_id,
                event_type=event_type,
                subject_id=subject_id,
            )
        except DataspaceError as exc:
            answers.append({"contract_id": contract_id, "error": exc.code})
            continue
        except Exception:  # the event is stored and acknowledged whatever a decision service does
            log.exception("real-time decision failed", extra={"contract_id": contract_id, "event_type": event_type})
            answers.append({"contract_id": contract_id, "error": "internal"})
            continue
        answers.append(
            {
                "contract_id": contract_id,
                "decision_id": outcome.id,
                "outcome": outcome.outcome,
                "decision": outcome.decision,
            }
        )
    return answers
