"""Subprocess for the kill -9 test: redeems with distinct keys in a loop and prints each committed one.

    python -m tests.integration.points_kill_worker DATABASE_URL SUBJECT_ID REWARD_KEY

A line is printed only after the transaction has committed, so every printed line is an acknowledged
redemption that must survive the kill.
"""

from __future__ import annotations

import sys

from dataspace.db import Database, utcnow
from dataspace.points import redemption as points_redemption


def main() -> None:
    url, subject_id, reward_key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    db = Database(url)
    for i in range(100_000):  # bounded; the test kills it long before
        key = f"kill-{i}"
        with db.transaction() as session:
            result = points_redemption.redeem(
                session, subject_id=subject_id, reward_key=reward_key, idempotency_key=key, now=utcnow()
            )
        print(f"{key} {result.redemption.id}", flush=True)


if __name__ == "__main__":
    main()
