"""The CSV export's human-readable columns are verified too: a reader believes the ``time`` or ``action`` it
sees, so an edit of any column (not only of the signed ``entry`` JSON) must make ``verify_export`` fail."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from dataspace.audit import record_event
from dataspace.context import Context
from dataspace.principal import Principal
from dataspace.tlog.export import write_export
from dataspace.tlog.log import latest_checkpoint, sequence, verifier_keys
from dataspace.usage import UsageEntry, record_usage
from transparency.export import CSV_COLUMNS, verify_export

STEWARD = Principal(subject="alice", role="steward", client_id="console")


def _export(ctx: Context, tmp_path: Path, log: str) -> tuple[list[str], list[list[str]]]:
    sequence(ctx.settings, ctx.db, ctx.keys, log)
    with ctx.db.session() as s:
        cp = latest_checkpoint(s, log=log)
        assert cp is not None
        path = tmp_path / f"{log}.csv"
        write_export(s, path, cp=cp, fmt="csv")
    assert verify_export(path, verifier_keys(ctx.settings, ctx.keys)).ok
    first, *rest = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return [first], list(csv.reader(rest))


def _write(tmp_path: Path, head: list[str], rows: list[list[str]]) -> Path:
    out = io.StringIO()
    out.writelines(head)
    csv.writer(out, lineterminator="\n").writerows(rows)
    path = tmp_path / "edited.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def _seed(ctx: Context, log: str) -> None:
    with ctx.db.transaction() as s:
        if log == "audit":
            for i in range(3):
                record_event(s, actor=STEWARD, action="catalog.update", target=f"field:{i}", details={"n": i})
        else:
            record_usage(s, [UsageEntry(5 + i, 7, ("age",), "acme", "insurance.offer", "x") for i in range(3)])


@pytest.mark.parametrize("log", ["audit", "usage"])
def test_editing_any_column_of_a_csv_export_fails_verification(ctx: Context, tmp_path: Path, log: str) -> None:
    _seed(ctx, log)
    head, rows = _export(ctx, tmp_path, log)
    header = rows[0]
    assert header == ["index", "leaf_hash", *CSV_COLUMNS[log], "entry"]
    keys = verifier_keys(ctx.settings, ctx.keys)
    for column in CSV_COLUMNS[log]:
        position = header.index(column)
        edited = [list(r) for r in rows]
        edited[2][position] = edited[2][position] + "0" if edited[2][position] else "edited"
        report = verify_export(_write(tmp_path, head, edited), keys)
        assert not report.ok, f"an edited {column!r} column verified"
        assert report.first_bad_index == 1
        assert column in (report.reason or "")


def test_a_dropped_or_renamed_column_fails_verification(ctx: Context, tmp_path: Path) -> None:
    _seed(ctx, "audit")
    head, rows = _export(ctx, tmp_path, "audit")
    keys = verifier_keys(ctx.settings, ctx.keys)
    renamed = [list(r) for r in rows]
    renamed[0][2], renamed[0][3] = renamed[0][3], renamed[0][2]  # "time" and "actor" headers swapped
    assert not verify_export(_write(tmp_path, head, renamed), keys).ok
    dropped = [r[:2] + r[3:] for r in rows]  # the "time" column gone
    assert not verify_export(_write(tmp_path, head, dropped), keys).ok
    short = [list(r) for r in rows]
    del short[1][2]  # one row lost a cell
    assert not verify_export(_write(tmp_path, head, short), keys).ok
