"""Linkage PSI end to end vs its floor: the same number of bare group multiplications, timed in the same run.

    .venv/bin/python bench/linkage.py --n 20000        # quick
    .venv/bin/python bench/linkage.py                  # 1M partner identifiers x 1M subjects (~10 min/core)

The operator has ``n`` subjects, 80% of whom granted linkage (only those enter message 1); the partner has
``n`` identifiers, half of them the operator's subjects. Measured, in one process, everything both sides do:
normalising and hashing identifiers onto the group, blinding (operator), checking and re-blinding message 1
and blinding its own records (partner), sealing each record's columns, encoding and decoding message 2,
checking the partner's points, matching, and opening every row (the server checks each against the
declaration). The floor is ``2 * |message 1| +
2 * n`` bare ``crypto_scalarmult_ed25519_noclamp`` calls, the multiplications the protocol cannot avoid.
The database (reading identifiers, storing links) is not included: see ``tests/integration/test_linkage.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nacl import bindings as nb  # noqa: E402
from nacl.public import PrivateKey, SealedBox  # noqa: E402

from clients.sdk import _psi  # noqa: E402
from dataspace.linkage import protocol  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="partner identifiers = operator subjects")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--consent", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n = args.n
    rng = random.Random(args.seed)

    # Operator: subjects 0..n-1, e-mail user<i>@example.com; a random 80% granted linkage.
    linkers = {i: f"user{i}@example.com" for i in range(n) if rng.random() < args.consent}
    # Partner: half of its identifiers are subjects (in other spelling), half are strangers.
    known = rng.sample(range(n), int(n * args.overlap))
    partner = [(f"User{i}@Example.com", {"expiry_month": 1 + i % 12}) for i in known]
    partner += [(f"stranger{i}@example.org", {"expiry_month": 1}) for i in range(n - len(known))]
    rng.shuffle(partner)
    expected = sum(1 for i in known if i in linkers)

    key = PrivateKey.generate()
    t0 = time.perf_counter()
    first = protocol.first_message("email", linkers)
    t1 = time.perf_counter()
    reply, skipped = _psi.PartnerRun("email").reply(
        contribution_id=1, public_key=bytes(key.public_key), operator_message=first.points, records=partner
    )
    wire = _psi.encode_reply(reply)
    del reply
    t2 = time.perf_counter()
    decoded = _psi.decode_reply(wire)
    matches = protocol.match(first.scalar, first.order, decoded)
    data_key = SealedBox(key).decrypt(decoded.sealed_data_key)
    for blinded, sealed in decoded.records:  # the server checks every row against the declaration
        _psi.open_row(data_key, 1, blinded, sealed)
    t3 = time.perf_counter()
    total = t3 - t0
    assert skipped == 0
    assert len(matches) == expected, (len(matches), expected)

    mults = 2 * (len(first.points) // 32) + 2 * n
    scalar = _psi.random_scalar()
    point = _psi.random_point()
    mul = nb.crypto_scalarmult_ed25519_noclamp
    f0 = time.perf_counter()
    for _ in range(mults):
        mul(scalar, point)
    floor = time.perf_counter() - f0

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"linkage PSI, n={n:,} ({args.overlap:.0%} overlap, {args.consent:.0%} consent), 1 process, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"  message 1: {len(first.points) // 32:,} points ({len(linkers):,} linkers + padding); "
        f"message 2: {len(wire) / 1e6:.1f} MB; matches {len(matches):,}"
    )
    print(f"  operator message 1   {t1 - t0:8.1f} s")
    print(f"  partner reply        {t2 - t1:8.1f} s")
    print(f"  operator match+open  {t3 - t2:8.1f} s")
    print(f"  end to end           {total:8.1f} s")
    print(f"  floor ({mults:,} bare multiplications) {floor:8.1f} s   ratio {total / floor:.2f}x (target <= 2x)")
    print(f"  peak RSS {rss_mb:,.0f} MB")


if __name__ == "__main__":
    main()
