"""kill -9 of the API server in the middle of consent toggles and redemptions (real processes, both databases).

Every write the client saw acknowledged (2xx) must survive: its grant/receipt, or its redemption exactly once
with exactly its postings; retrying an acknowledged Idempotency-Key replays it; the points ledger balances and
the audit Merkle log verifies against its signed checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dataspace.context import Context
from tests.faults.harness import (
    Driver,
    ServerProcess,
    assert_audit_log_verifies,
    assert_consents_durable,
    assert_redemptions_exactly_once,
    prepare,
    wait_for_acks,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_kill_9_mid_load_loses_nothing_acknowledged(ctx: Context, tmp_path: Path) -> None:
    customers = prepare(ctx, 6)
    server = ServerProcess(ctx, tmp_path)
    server.start()
    try:
        driver = Driver(server.base, customers).start()
        try:
            wait_for_acks(driver, 60, timeout=20)
            time.sleep(0.013)  # land inside the next requests, not between them
            server.kill9()
            time.sleep(0.3)  # requests now fail: in flight when the server died, or refused
        finally:
            driver.stop()
        acks = driver.acks
        assert acks.writes() >= 60, server.log_tail()
        assert acks.redemptions
        assert acks.withdrawals
        assert acks.transport_errors, "the kill should have cut requests off"

        server.start()  # the same database, a fresh process: nothing to repair by hand
        assert_consents_durable(ctx, acks)
        assert_redemptions_exactly_once(ctx, server.base, customers, acks)
        assert assert_audit_log_verifies(ctx, tmp_path, acks) >= acks.writes()
    finally:
        server.stop()
