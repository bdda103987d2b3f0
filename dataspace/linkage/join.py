"""The one place partner columns meet subjects: appended to the emission of that partner's own job, inside the
server, on the way into the sandbox.

- Only the contract's own linked contribution is read, and only for subjects whose linkage grant is active
  at emission time (``service.partner_columns``, which also writes each use to the subject's ledger).
- Values are coarsened per the declaration before the model sees them: a ``bin`` transform (``width``) or a
  ``top_code`` (``upper``) when the column allows one and not ``identity``; strings become the index of the
  value in the declared ``values`` (numbers only: ONNX models take numbers); booleans 0/1.
- A subject without a link gets nulls (the model cannot tell "not linked" from "no value").
- Column names are ``partner__<key>``, after the contract's features, in declaration order; an ONNX model
  under a contract with a linked contribution takes those columns too (``feature_names``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from dataspace.db import Database
from dataspace.emission.service import Emission
from dataspace.emission.transforms import encode
from dataspace.linkage import service
from dataspace.linkage.keys import PartnerKeys
from dataspace.linkage.models import Contribution
from dataspace.vault import Vault

PREFIX = "partner__"


def feature_names(session: Session, *, contract_id: int) -> list[str]:
    """The partner columns a job under this contract receives (none without a linked contribution)."""
    columns = session.scalar(
        select(Contribution.columns).where(Contribution.contract_id == contract_id, Contribution.status == "linked")
    )
    return [PREFIX + c["key"] for c in columns or []]


def coarsen(column: Mapping[str, Any], value: Any) -> float | None:
    """The value a model may see of one partner column (see module doc)."""
    if value is None:
        return None
    t = column["data_type"]
    if t == "boolean":
        return 1.0 if value else 0.0
    if t == "string":
        values = column.get("values") or []
        return float(values.index(value)) if value in values else None
    x = float(value)
    if not math.isfinite(x):
        return None
    transforms = column.get("transforms") or {}
    if "identity" not in transforms:
        if "bin" in transforms and float(transforms["bin"].get("width", 0) or 0) > 0:
            w = float(transforms["bin"]["width"])
            return math.floor(x / w) * w
        if "top_code" in transforms and "upper" in transforms["top_code"]:
            return min(x, float(transforms["top_code"]["upper"]))
        return None  # no transform the model may see: withheld
    return x


def attach(db: Database, vault: Vault, emission: Emission, *, contract_id: int, job_id: int) -> Emission:
    """``emission`` with the partner columns of job ``job_id``'s contract ``contract_id`` appended (unchanged
    without a linked contribution). The uses go to the subjects' ledger in a transaction of their own,
    committed before the model runs: the columns were joined, whatever the job's outcome."""
    subjects = emission.pseudonym_to_subject.subject_ids
    with db.transaction() as session:
        declared, values = service.partner_columns(
            session, PartnerKeys.of(vault), contract_id=contract_id, subject_ids=subjects.tolist(), job_id=job_id
        )
    if not declared:
        return emission
    codes = list(emission._codes)  # the emission's own columns are extended, not rebuilt
    decoders = list(emission._decoders)
    fields = list(emission.schema)
    sids: Sequence[int] = subjects.tolist()
    for column in declared:
        key = column["key"]
        data = [coarsen(column, values[s].get(key)) if s in values else None for s in sids]
        c, d = encode(pa.array(data, pa.float64()))
        codes.append(c.astype(np.int32))
        decoders.append(d)
        fields.append(pa.field(PREFIX + key, pa.float64(), metadata={"partner_column": key}))
    return replace(
        emission, schema=pa.schema(fields, metadata=emission.schema.metadata), _codes=codes, _decoders=decoders
    )


def linked_run_query(contract_id: Any) -> Select[Any]:
    """The contract's linked run, if any (a real-time pool is rebuilt when it changes); ``contract_id`` is a
    value or a column, so the query can be a subquery of a larger one. Linking a run retires the earlier one."""
    return select(func.max(Contribution.id)).where(
        Contribution.contract_id == contract_id, Contribution.status == "linked"
    )


def values_for(db: Database, vault: Vault, *, contract_id: int, subject_id: int) -> list[float | None]:
    """One customer's partner columns for a real-time decision, coarsened, in ``feature_names`` order
    (nulls when the customer is not linked or withdrew); the use goes to the ledger as for a job."""
    with db.transaction() as session:
        declared, values = service.partner_columns(
            session, PartnerKeys.of(vault), contract_id=contract_id, subject_ids=[subject_id]
        )
    row = values.get(subject_id)
    return [coarsen(c, row.get(c["key"])) if row is not None else None for c in declared]
