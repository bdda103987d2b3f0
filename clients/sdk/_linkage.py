"""The partner's side of a linkage run over HTTP: start the run, fetch message 1, answer it locally (raw
identifiers and the partner's scalar never leave this process), send the reply. See ``_psi``."""

from __future__ import annotations

import base64
import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clients.sdk._base import BaseClient
from clients.sdk._psi import PartnerRun, encode_reply
from clients.sdk.models import LinkageResult, LinkageRun, _load


def run_linkage(
    client: BaseClient,
    *,
    contract_id: int,
    records: Sequence[tuple[str, Mapping[str, Any]]],
    default_country_code: str | None = None,
) -> LinkageResult:
    """One full run under a contract that declared partner columns; returns the run as the server shows it
    (with the DP count of matches) plus ``skipped``: records whose identifier did not normalise or repeated
    another. The identifier kind and the columns are the contract's declaration."""
    run = _load(LinkageRun, client.request("POST", "/v1/partner/linkage", json={"contract_id": contract_id}))
    message = client._send("GET", f"/v1/partner/linkage/{run.id}/message").content
    side = PartnerRun(run.kind, default_country_code=default_country_code)
    reply, skipped = side.reply(
        contribution_id=run.id,
        public_key=base64.b64decode(run.public_key),
        operator_message=message,
        records=records,
    )
    done = client.request(
        "PUT",
        f"/v1/partner/linkage/{run.id}/reply",
        content=encode_reply(reply),
        headers={"Content-Type": "application/octet-stream"},
    )
    return _load(LinkageResult, {**done, "skipped": skipped})


def read_records(
    path: Path, *, id_column: str, columns: Sequence[Mapping[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """Records from a CSV file: the identifier column and the declared columns, typed as declared."""
    casts: dict[str, Any] = {"integer": int, "number": float, "string": str, "boolean": lambda v: v.lower() == "true"}
    out: list[tuple[str, dict[str, Any]]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            values: dict[str, Any] = {}
            for c in columns:
                raw = row.get(c["key"])
                values[c["key"]] = None if raw in (None, "") else casts[c["data_type"]](raw)
            out.append((row[id_column], values))
    return out
