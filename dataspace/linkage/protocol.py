"""The operator's side of the linkage PSI (pure: no database). The shared specification (normalisation, the
hash onto the group, wire formats) is ``clients.sdk._psi``; see its docstring and the README for the
messages and what each side learns.

Invariants the caller relies on:
- message 1 holds only points of the identifiers it is given (the service gives those of customers with an
  active linkage grant), padded with random points to a coarse size, in a random order;
- ``match`` returns, for each partner record whose identifier is in message 1, the subject id behind it,
  and nothing for padding or for records that did not match.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from clients.sdk._psi import (
    KINDS,
    POINT_BYTES,
    InvalidIdentifier,
    MalformedMessage,
    PartnerReply,
    blind,
    decode_reply,
    hash_to_group,
    is_valid_point,
    normalize,
    random_point,
    random_scalar,
)

__all__ = [
    "KINDS",
    "FirstMessage",
    "InvalidIdentifier",
    "MalformedMessage",
    "decode_reply",
    "first_message",
    "match",
    "padded_size",
]

MIN_PAD = 1024


def padded_size(n: int) -> int:
    """Message 1's size: ``n`` rounded up to a multiple of max(1024, 2^(bits(n) - 4)), so the partner learns
    how many customers granted linkage only to about 4 significant bits (and at most ~12% padding)."""
    step = max(MIN_PAD, 1 << max(0, n.bit_length() - 4))
    return max(step, -(-n // step) * step)


@dataclass(frozen=True)
class FirstMessage:
    scalar: bytes  # the operator's ``a``: secret, kept wrapped until the reply
    points: bytes  # message 1, concatenated
    order: npt.NDArray[np.int64]  # the subject id behind each point, -1 for padding


def first_message(kind: str, identifiers: Mapping[int, str]) -> FirstMessage:
    """Message 1 for ``identifiers`` (subject id -> raw identifier; those that do not normalise are left out)."""
    subjects: list[int] = []
    hashed: list[bytes] = []
    seen: set[str] = set()
    for sid, raw in identifiers.items():
        try:
            norm = normalize(kind, raw)
        except InvalidIdentifier:
            continue
        if norm in seen:  # two customers with one identifier: neither can be linked unambiguously
            continue
        seen.add(norm)
        subjects.append(sid)
        hashed.append(hash_to_group(kind, norm))
    size = padded_size(len(hashed))
    a = random_scalar()
    points = blind(a, hashed)
    points += [random_point() for _ in range(size - len(points))]
    order = np.full(size, -1, dtype=np.int64)
    order[: len(subjects)] = subjects
    shuffled = list(range(size))
    secrets.SystemRandom().shuffle(shuffled)
    perm = np.array(shuffled, dtype=np.int64)
    return FirstMessage(a, b"".join(points[i] for i in perm), order[perm])


def _check_points(points: Sequence[bytes], what: str) -> None:
    for p in points:
        if not is_valid_point(p):
            raise MalformedMessage(f"{what}: a group element is invalid")


def match(scalar: bytes, order: npt.NDArray[np.int64], reply: PartnerReply) -> list[tuple[int, int]]:
    """``(record index, subject id)`` for every partner record that matched a customer of message 1.

    Raises ``MalformedMessage`` for a reply whose operator set is not message 1's size, an invalid group
    element, or a blinded identifier given twice."""
    if len(reply.operator_set) != order.size:
        raise MalformedMessage("the reply's operator set is not the size of message 1")
    # The operator set is only compared, never multiplied by a secret: an invalid element there cannot leak
    # anything, it just matches nothing, so it is not worth a subgroup check per element.
    blinded = [b for b, _ in reply.records]
    if any(len(b) != POINT_BYTES for b in blinded):
        raise MalformedMessage("a blinded identifier is not a group element")
    if len(set(blinded)) != len(blinded):
        raise MalformedMessage("a blinded identifier is given twice")
    _check_points(blinded, "records")
    index = {p: int(sid) for p, sid in zip(reply.operator_set, order.tolist(), strict=True) if sid >= 0}
    out: list[tuple[int, int]] = []
    for i, p in enumerate(blind(scalar, blinded)):
        sid = index.get(p)
        if sid is not None:
            out.append((i, sid))
    return out
