"""The portal remembers the usage ledger's checkpoint in the browser and, on the next visit, verifies a
consistency proof to the current one; when the operator has rewritten the ledger (the remembered tree is
not a prefix of the current one, re-signed with the operator's key), the customer sees a warning with both
signed checkpoints to download."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from dataspace.auth.web_clients import ensure_web_clients
from dataspace.context import Context
from dataspace.tlog import log as tlog
from dataspace.usage import UsageEntry, record_usage
from tests.e2e.conftest import shot, sign_in
from tests.factories.identities import make_subject, make_user
from tests.integration.oauth_server import running_server

pytestmark = [pytest.mark.e2e]


def _uses(ctx: Context, subject: int, n: int, tag: str) -> None:
    with ctx.db.transaction() as s:
        record_usage(
            s, [UsageEntry(i + 1, subject, ("income",), "acme", "insurance.offer", f"{tag}-{i}") for i in range(n)]
        )
    tlog.sequence(ctx.settings, ctx.db, ctx.keys, "usage")


def _remembered_size(page: Any) -> int:
    return int(
        page.evaluate(
            "() => { const k = Object.keys(localStorage).find(k => k.startsWith('dataspace.checkpoint.'));"
            " return k ? Number(JSON.parse(localStorage.getItem(k)).note.split('\\n')[1]) : -1; }"
        )
    )


@pytest.fixture
def served(ctx: Context) -> Iterator[tuple[str, Context, int, str]]:
    subject = make_subject(ctx)
    user = make_user(ctx, "customer", username="ledger-customer", subject_id=subject).username
    with running_server(ctx) as (base, served_ctx):
        ensure_web_clients(served_ctx.settings, served_ctx.db)
        yield base, served_ctx, subject, user


def test_portal_warns_when_the_remembered_ledger_is_not_a_prefix(
    served: tuple[str, Context, int, str], page: Any, tmp_path: Path
) -> None:
    base, ctx, subject, user = served
    _uses(ctx, subject, 5, "honest")
    sign_in(page, base + "/portal/", user)
    page.wait_for_function("() => Object.keys(localStorage).some(k => k.startsWith('dataspace.checkpoint.'))")
    assert _remembered_size(page) == 5

    # The ledger grows honestly: the next visit verifies the consistency proof and remembers the new size.
    _uses(ctx, subject, 3, "honest")
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_function(
        "() => Object.keys(localStorage).some(k => k.startsWith('dataspace.checkpoint.')"
        " && JSON.parse(localStorage.getItem(k)).note.split('\\n')[1] === '8')"
    )
    assert page.locator("#ledger-warning").count() == 0

    # The operator rewrites the ledger (keeping its signing key) and serves a longer, different one.
    with ctx.db.transaction() as s:
        for table in ("tlog_entries", "tlog_nodes", "tlog_checkpoints", "tlog_heads"):
            s.execute(text(f"DELETE FROM {table} WHERE log = 'usage'"))
    _uses(ctx, subject, 11, "rewritten")
    page.reload()
    warning = page.locator("#ledger-warning")
    warning.wait_for()
    assert warning.get_attribute("data-status") == "fork"
    assert "not a prefix" in warning.inner_text()
    shot(page, "portal-ledger-fork-warning")
    assert _remembered_size(page) == 8  # the memory keeps what it verified
    with page.expect_download() as remembered:
        warning.get_by_role("button", name="Download the checkpoint seen before").click()
    with page.expect_download() as current:
        warning.get_by_role("button", name="Download the checkpoint shown now").click()
    old = Path(remembered.value.path()).read_text()
    new = Path(current.value.path()).read_text()
    assert old.split("\n")[1] == "8"
    assert new.split("\n")[1] == "11"
    assert old.split("\n\n")[1].startswith("\u2014 ")
    assert new.split("\n\n")[1].startswith("\u2014 ")
