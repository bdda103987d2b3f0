"""The backward-compatibility check between two versions of a business event contract (no database)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dataspace.events.contract_models import EventContract
from dataspace.events.contracts import Proposal, RetryPolicy, compare, required_change

BASE: dict[str, Any] = {
    "type": "object",
    "required": ["ticket_id", "closed_at"],
    "properties": {
        "ticket_id": {"type": "string", "description": "The service ticket."},
        "closed_at": {"type": "string", "format": "date-time", "description": "When it was closed."},
        "resolution": {"type": "string", "enum": ["fixed", "replaced"], "description": "How it ended."},
        "duration": {"type": "number", "x-unit": "h", "description": "Open time."},
        "device": {
            "type": "object",
            "description": "The device serviced.",
            "properties": {"model": {"type": "string", "description": "Model name."}},
        },
    },
}
RETRY = RetryPolicy().__dict__


def old() -> EventContract:
    return EventContract(
        event_type="service_ticket.closed",
        major=1,
        minor=0,
        patch=0,
        schema=copy.deepcopy(BASE),
        producer_partner_id=None,
        consumer_partner_ids=[7],
        purpose_key=None,
        latency_ms=5000,
        retry=dict(RETRY),
        title="Ticket closed",
        description="A service ticket was closed.",
    )


def changed(edit: Any) -> str:
    schema = copy.deepcopy(BASE)
    edit(schema)
    proposal = Proposal(
        event_type="service_ticket.closed",
        version="1.0.1",
        title="Ticket closed",
        description="A service ticket was closed.",
        schema=schema,
        consumers=["x"],
        retry=dict(RETRY),
    )
    return required_change(compare(old(), proposal, (None, [7])))


def _set(path: list[str], value: Any) -> Any:
    def edit(schema: dict[str, Any]) -> None:
        node = schema
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _add_required(schema: dict[str, Any]) -> None:
    schema["properties"]["technician"] = {"type": "string", "description": "Who closed it."}
    schema["required"].append("technician")


@pytest.mark.parametrize(
    ("edit", "level"),
    [
        (lambda s: None, "none"),
        (_set(["properties", "ticket_id", "description"], "The ticket's id."), "patch"),
        (_set(["properties", "notes"], {"type": "string", "description": "Free text."}), "minor"),
        (_set(["properties", "resolution", "enum"], ["fixed", "replaced", "refunded"]), "minor"),
        (_set(["properties", "resolution", "enum"], ["fixed"]), "major"),
        (lambda s: s["properties"].pop("duration"), "major"),
        (_set(["properties", "duration", "type"], "integer"), "major"),
        (_set(["properties", "duration", "x-unit"], "min"), "major"),
        (_set(["properties", "closed_at", "format"], "date"), "major"),
        (_add_required, "major"),
        (_set(["required"], ["ticket_id", "closed_at", "resolution"]), "major"),
        (_set(["properties", "device", "properties", "serial"], {"type": "string", "description": "S/N."}), "minor"),
        (lambda s: s["properties"]["device"]["properties"].pop("model"), "major"),
    ],
)
def test_change_levels(edit: Any, level: str) -> None:
    assert changed(edit) == level


def test_contract_terms_count_too() -> None:
    base = Proposal(
        event_type="service_ticket.closed",
        version="1.1.0",
        title="Ticket closed",
        description="A service ticket was closed.",
        schema=copy.deepcopy(BASE),
        consumers=["x"],
        retry=dict(RETRY),
    )
    assert required_change(compare(old(), base, (None, [7, 8]))) == "major"  # a new consumer re-approves
    base.latency_ms = 1000
    assert required_change(compare(old(), base, (None, [7]))) == "minor"
    base.purpose = "insurance_offer"
    assert required_change(compare(old(), base, (None, [7]))) == "major"


def test_retry_delays_follow_the_policy() -> None:
    policy = RetryPolicy(backoff_seconds=1, multiplier=3, max_backoff_seconds=20, max_attempts=5)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 3, 9, 20, 20]
