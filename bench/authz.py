"""Authorization decisions per second: raw Casbin, the cached Authorizer, and full token verification.

    .venv/bin/python bench/authz.py --n 200000

Prints decisions/s (single thread = one core), p50/p99 per decision, and peak RSS.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataspace import migrations  # noqa: E402
from dataspace.auth.policy import Authorizer, build_enforcer, default_rules  # noqa: E402
from dataspace.context import Context  # noqa: E402
from dataspace.db import Database  # noqa: E402
from dataspace.keys import KeyRing  # noqa: E402
from dataspace.principal import ROLES  # noqa: E402
from dataspace.settings import Settings  # noqa: E402


def _requests(n: int) -> list[tuple[str, str, str]]:
    rules = default_rules()
    objects = sorted({r[2] for r in rules if r[0] == "p"} | {"me.consents", "partner.jobs", "unknown.thing"})
    rng = random.Random(7)
    return [(rng.choice(ROLES), rng.choice(objects), rng.choice(("read", "write"))) for _ in range(n)]


def _rate(label: str, n: int, fn: object, reqs: list[tuple[str, str, str]]) -> None:
    call = fn  # type: ignore[assignment]
    samples: list[float] = []
    start = time.perf_counter()
    for i, (role, obj, act) in enumerate(reqs):
        if i % 100 == 0:
            t0 = time.perf_counter()
            call(role, obj, act)  # type: ignore[operator]
            samples.append(time.perf_counter() - t0)
        else:
            call(role, obj, act)  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    samples.sort()
    p50 = samples[len(samples) // 2] * 1e6
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6
    print(f"{label:<34} {n / elapsed:>12,.0f} decisions/s   p50 {p50:7.2f} µs   p99 {p99:7.2f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000, help="decisions per measurement")
    args = parser.parse_args()
    reqs = _requests(args.n)

    enforcer = build_enforcer(default_rules())
    raw_n = min(args.n, 20_000)
    _rate("casbin enforce (no cache)", raw_n, enforcer.enforce, reqs[:raw_n])

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrations.upgrade(db.engine)
        authorizer = Authorizer(db, max_age=3600)
        _rate("Authorizer.allows (decision cache)", args.n, authorizer.allows, reqs)

        # End to end minus HTTP: verify a signed JWT + revocation lookup + decision.
        from starlette.requests import Request

        from dataspace.http.security import authorize_request
        from tests.factories.identities import issue_token

        ctx = Context(settings=Settings(data_dir=Path(tmp), database_url=db.url), db=db, keys=KeyRing.generate())
        token = issue_token(ctx, "steward")
        request = Request(
            {
                "type": "http",
                "method": "GET",
                "path": "/v1/catalog/fields",
                "query_string": b"",
                "headers": [(b"authorization", f"Bearer {token}".encode())],
            }
        )
        full_n = min(args.n, 5_000)

        def full(role: str, obj: str, act: str) -> None:
            authorize_request(request, ctx, "catalog", "read")

        _rate("token verify + revocation + decision", full_n, full, reqs[:full_n])
        db.dispose()

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss_mb:.0f} MiB")


if __name__ == "__main__":
    main()
