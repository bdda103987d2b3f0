"""Bulk ingest over HTTP (steward): JSON rows or a CSV body; same validation as the CLI."""

from __future__ import annotations

import csv
import io
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from dataspace.context import Context
from dataspace.errors import InvalidInput
from dataspace.http.deps import authorize, get_context
from dataspace.ingest.service import DEFAULT_ID_COLUMN, ingest_batches, ingest_rows
from dataspace.principal import Principal

router = APIRouter(prefix="/v1", tags=["ingest"])
MAX_BODY = 64 << 20


class IngestRows(BaseModel):
    id_column: str = DEFAULT_ID_COLUMN
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=100_000)


@router.post("/ingest")
def ingest_json(
    body: IngestRows, ctx: Context = Depends(get_context), principal: Principal = Depends(authorize("ingest", "write"))
) -> dict[str, Any]:
    """Validate and store rows; rejected rows come back with row numbers and reasons, nothing of them stored."""
    return ingest_rows(ctx.db, ctx.keys, ctx.vault, body.rows, id_column=body.id_column, actor=principal).as_dict()


@router.post("/ingest/csv", openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}})
async def ingest_csv(
    request: Request, ctx: Context = Depends(get_context), principal: Principal = Depends(authorize("ingest", "write"))
) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidInput(f"body larger than {MAX_BODY >> 20} MiB; use the CLI for big files")
    try:
        header = next(csv.reader([body.split(b"\n", 1)[0].decode("utf-8-sig").strip()]), [])
        table = pacsv.read_csv(
            io.BytesIO(body),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError, csv.Error) as exc:  # csv.Error: a bare CR inside the header
        raise InvalidInput(f"not a valid CSV: {str(exc).splitlines()[0]}") from exc
    report = ingest_batches(
        ctx.db, ctx.keys, ctx.vault, table.to_batches(max_chunksize=100_000), actor=principal, source="csv-upload"
    )
    return report.as_dict()
