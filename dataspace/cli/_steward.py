"""What the steward's commands (``dataspace contracts|models|budgets|jobs ...``) share: the server opened
for one command, and decisions taken in the name of a steward account.

A decision names the steward who takes it (``--steward NAME``, an enabled steward account): the two-person
rule counts stewards, and the audit trail records ``steward:NAME``. Whoever runs these commands already holds
the database and the key file; stewards without that access use the steward console or ``dataspace remote``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer

from dataspace.settings import Settings

T = TypeVar("T")
STEWARD = typer.Option(..., "--steward", help="The steward taking the decision (an enabled steward account).")


@contextmanager
def opened_context() -> Iterator[Any]:
    from dataspace.context import Context

    ctx = Context.open(Settings())
    try:
        yield ctx
    finally:
        ctx.close()


def as_steward(session: Any, name: str) -> Any:
    from sqlalchemy import select

    from dataspace.auth.models import User
    from dataspace.errors import InvalidInput
    from dataspace.principal import Principal

    user = session.scalar(select(User).where(User.username == name))
    if user is None or user.role != "steward" or user.disabled:
        raise InvalidInput(f"{name!r} is not an enabled steward account")
    return Principal(subject=user.username, role="steward", client_id="cli")


def write_as(fn: Callable[[Any, Any], T], steward: str) -> T:
    with opened_context() as ctx, ctx.db.transaction() as session:
        return fn(session, as_steward(session, steward))


def two_person(contract: Any, approvals: list[str]) -> str:
    names = ", ".join(a.removeprefix("steward:") for a in approvals) or "nobody"
    if contract.status != "proposed":
        return f"approved by {names}" if approvals else ""
    missing = contract.required_approvals - len(approvals)
    return f"approved by {names}; still needs {missing} more approval(s) from a different steward"
