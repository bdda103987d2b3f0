"""Vectorized consent evaluation for a whole population at once.

The current-grants table is held as columnar numpy arrays (one row per grant, strings dictionary-encoded).
``evaluate`` answers "may this partner use each of these fields of each of these subjects for this purpose,
at this granularity, at time t" as a (subjects x fields) boolean matrix without a Python loop per subject
or per grant; it applies exactly the rule of ``consent.model.is_permitted`` (a property test checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from consent.errors import InvalidGrant
from consent.model import FieldRef, Grant, Granularity, PartnerRef

OPEN_END = np.iinfo(np.int64).max
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def to_micros(at: datetime) -> int:
    """Microseconds since the Unix epoch (exact, no float rounding)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidGrant("at must be a timezone-aware UTC time")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class GrantTable:
    """Columnar grants. ``target`` codes index ``targets`` (``f:<field>``/``d:<dimension>``), ``recipient``
    codes index ``recipients`` (``p:<partner>``/``c:<category>``), ``purpose`` codes index ``purposes``.
    ``start``/``end`` are epoch microseconds, ``end`` = ``OPEN_END`` when open."""

    subject: npt.NDArray[np.int64]
    target: npt.NDArray[np.int32]
    recipient: npt.NDArray[np.int32]
    purpose: npt.NDArray[np.int32]
    level: npt.NDArray[np.int8]
    start: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    targets: tuple[str, ...]
    recipients: tuple[str, ...]
    purposes: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.subject)
        for name in ("target", "recipient", "purpose", "level", "start", "end"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has a different length")

    def __len__(self) -> int:
        return len(self.subject)

    @classmethod
    def from_grants(cls, grants: Iterable[Grant]) -> GrantTable:
        rows = list(grants)
        targets: dict[str, int] = {}
        recipients: dict[str, int] = {}
        purposes: dict[str, int] = {}

        def code(vocab: dict[str, int], value: str) -> int:
            return vocab.setdefault(value, len(vocab))

        n = len(rows)
        return cls(
            subject=np.fromiter((g.subject_id for g in rows), np.int64, n),
            target=np.fromiter((code(targets, g.scope.target) for g in rows), np.int32, n),
            recipient=np.fromiter((code(recipients, g.scope.recipient) for g in rows), np.int32, n),
            purpose=np.fromiter((code(purposes, g.scope.purpose) for g in rows), np.int32, n),
            level=np.fromiter((g.granularity.level for g in rows), np.int8, n),
            start=np.fromiter((to_micros(g.valid_from) for g in rows), np.int64, n),
            end=np.fromiter((OPEN_END if (e := g.effective_end) is None else to_micros(e) for g in rows), np.int64, n),
            targets=tuple(targets),
            recipients=tuple(recipients),
            purposes=tuple(purposes),
        )


def _code(vocab: Sequence[str], value: str) -> int:
    try:
        return vocab.index(value)
    except ValueError:
        return -1  # matches no row


class _Locator:
    """Maps subject ids to their row in the population (built once per evaluation)."""

    def __init__(self, population: IntArray) -> None:
        self.n = len(population)
        self.lookup: IntArray | None = None
        if self.n == 0:
            return
        lo, hi = int(population.min()), int(population.max())
        if lo >= 0 and hi < 4 * self.n + 1_000_000:
            # Dense ids (the usual case for database keys): a direct lookup table beats a binary search.
            # One spare slot at the end answers "not in the population" for any larger id.
            self.hi = hi
            self.lookup = np.full(hi + 2, -1, np.int64)
            self.lookup[population] = np.arange(self.n, dtype=np.int64)
            if not np.array_equal(self.lookup[population], np.arange(self.n)):
                raise ValueError("subjects must be distinct")
            return
        self.order = np.argsort(population, kind="stable")
        self.sorted = population[self.order]
        if np.any(self.sorted[1:] == self.sorted[:-1]):
            raise ValueError("subjects must be distinct")

    def locate(self, subjects: IntArray) -> tuple[IntArray, BoolArray]:
        """Row of each subject id in the population, and whether it is there at all."""
        if self.n == 0 or len(subjects) == 0:
            return np.zeros(len(subjects), np.int64), np.zeros(len(subjects), bool)
        if self.lookup is not None:
            if int(subjects.min()) >= 0:
                pos = self.lookup[np.minimum(subjects, self.hi + 1)]
            else:
                pos = np.full(len(subjects), -1, np.int64)
                ok = (subjects >= 0) & (subjects <= self.hi)
                pos[ok] = self.lookup[subjects[ok]]
            return pos, pos >= 0
        idx = np.minimum(np.searchsorted(self.sorted, subjects), self.n - 1)
        return self.order[idx].astype(np.int64), self.sorted[idx] == subjects


def evaluate(
    table: GrantTable,
    *,
    subjects: npt.ArrayLike,
    fields: Sequence[FieldRef],
    partner: PartnerRef,
    purpose: str,
    at: datetime,
    granularity: Granularity = Granularity.GENERALIZED,
) -> BoolArray:
    """A (len(subjects) x len(fields)) matrix: ``[i, j]`` is ``is_permitted(subjects[i], fields[j], ...)``.

    ``subjects`` must hold distinct ids; grants of subjects not in it are ignored.
    """
    population = np.asarray(subjects, dtype=np.int64)
    matrix = np.zeros((len(population), len(fields)), dtype=bool)
    if len(table) == 0 or len(fields) == 0 or len(population) == 0:
        _Locator(population)  # still refuse duplicate subjects
        return matrix
    t = to_micros(at)
    purpose_code = _code(table.purposes, purpose)
    partner_code = _code(table.recipients, f"p:{partner.key}")
    category_code = _code(table.recipients, f"c:{partner.category}")
    if purpose_code < 0 or (partner_code < 0 and category_code < 0):
        return matrix

    # 1. Grants in force for this purpose, recipient and granularity (one pass over the columns).
    live = table.purpose == purpose_code
    live &= table.start <= t
    live &= table.end > t
    live &= table.level >= granularity.level
    explicit_partner = table.recipient == partner_code
    if category_code >= 0:
        live &= explicit_partner | (table.recipient == category_code)
    else:
        live &= explicit_partner

    locator = _Locator(population)
    width = len(fields)
    flat_matrix = matrix.reshape(-1)  # a view: row-major (subject, field) cells
    sensitive = np.fromiter((f.sensitive for f in fields), bool, width)

    # 2. Field-level grants: lookup tables map each target code to the column of that field (-1: the grant
    # names a field nobody asked for) and to that field's sensitivity. Sensitive fields count only grants
    # naming this partner explicitly.
    first_column: dict[str, int] = {}
    for j, f in enumerate(fields):
        first_column.setdefault(f.key, j)
    column_of_code = np.full(len(table.targets) + 1, -1, np.int32)
    sensitive_code = np.zeros(len(table.targets) + 1, bool)
    for key, j in first_column.items():
        code = _code(table.targets, f"f:{key}")
        if code >= 0:
            column_of_code[code] = j
            sensitive_code[code] = sensitive[j]
    column = column_of_code[table.target]
    hit = live & (column >= 0)
    if sensitive.any():
        hit &= explicit_partner | ~sensitive_code[table.target]
    rows = np.flatnonzero(hit)
    pos, inside = locator.locate(table.subject[rows])
    cells = pos[inside] * width + column[rows[inside]]
    flat_matrix[cells] = True

    # 3. Dimension-level grants never cover sensitive fields (and are few: handled per dimension).
    columns_of_dimension: dict[str, list[int]] = {}
    for j, f in enumerate(fields):
        if not f.sensitive and first_column[f.key] == j:
            columns_of_dimension.setdefault(f.dimension, []).append(j)
    for dim, cols in columns_of_dimension.items():
        code = _code(table.targets, f"d:{dim}")
        if code < 0:
            continue
        rows = np.flatnonzero(live & (table.target == code))
        pos, inside = locator.locate(table.subject[rows])
        for j in cols:
            flat_matrix[pos[inside] * width + j] = True

    # A field requested twice gets the same answer in every column that names it.
    for j, f in enumerate(fields):
        if first_column[f.key] != j:
            matrix[:, j] = matrix[:, first_column[f.key]]
    return matrix


def permitted_for_all(matrix: BoolArray) -> BoolArray:
    """Rows whose every requested field is permitted (a contract needs all of its fields)."""
    if matrix.shape[1] == 0:
        # An empty contract is not a reason to select everybody: default deny.
        return np.zeros(matrix.shape[0], dtype=bool)
    return np.asarray(matrix.all(axis=1), dtype=bool)
