"""Validation of what came out of the sandbox: the decisions stream against the decision schema.

The runner shares its process with the partner's code, so nothing it wrote is trusted: the parent parses
and checks everything again here.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import ipc

from sandbox._contract import DecisionSchema
from sandbox._errors import JobFailed

__all__ = ["validate_decisions"]


def _safe(value: object) -> str:
    return repr(value)[:64]


def validate_decisions(output: bytes, expected: pa.ChunkedArray, schema: DecisionSchema) -> pa.Table:
    """Parse the runner's Arrow IPC stream; exactly one valid decision per expected pseudonym, or `JobFailed`."""
    try:
        table = ipc.open_stream(pa.py_buffer(output)).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise JobFailed("output invalid: not an Arrow IPC stream", detail=str(exc)[:300]) from exc
    if table.schema.names != ["pseudonym", "decision"]:
        raise JobFailed("output invalid: expected columns (pseudonym, decision)", detail=_safe(table.schema.names))
    pseudonyms = table.column("pseudonym")
    decisions = table.column("decision")
    if not (pa.types.is_string(pseudonyms.type) or pa.types.is_large_string(pseudonyms.type)):
        raise JobFailed("output invalid: pseudonym column is not a string column")
    if pseudonyms.null_count or decisions.null_count:
        raise JobFailed("output invalid: null pseudonyms or decisions")
    pseudonyms = pseudonyms.cast(pa.string())

    if schema.labels is not None:
        if not (pa.types.is_string(decisions.type) or pa.types.is_large_string(decisions.type)):
            raise JobFailed("output invalid: decisions are not labels")
        decisions = decisions.cast(pa.string())
        allowed = pc.is_in(decisions, value_set=pa.array(schema.labels, type=pa.string()))
        bad = len(decisions) - pc.sum(allowed.cast(pa.int64())).as_py() if len(decisions) else 0
        if bad:
            first = decisions.filter(pc.invert(allowed))[0].as_py()
            raise JobFailed(
                f"output invalid: {bad} decisions with a label not in the schema",
                detail=f"first offending label: {_safe(first)}",
            )
    else:
        if not (pa.types.is_floating(decisions.type) or pa.types.is_integer(decisions.type)):
            raise JobFailed("output invalid: decisions are not numbers")
        decisions = decisions.cast(pa.float64())
        assert schema.minimum is not None
        assert schema.maximum is not None
        finite = pc.is_finite(decisions)
        within = pc.and_(
            finite,
            pc.and_(pc.greater_equal(decisions, schema.minimum), pc.less_equal(decisions, schema.maximum)),
        )
        bad = len(decisions) - pc.sum(within.cast(pa.int64())).as_py() if len(decisions) else 0
        if bad:
            raise JobFailed(f"output invalid: {bad} decisions outside [{schema.minimum:g}, {schema.maximum:g}]")

    if len(pseudonyms) and pc.count_distinct(pseudonyms).as_py() != len(pseudonyms):
        raise JobFailed("output invalid: more than one decision for a pseudonym")
    if len(pseudonyms):
        known = pc.is_in(pseudonyms, value_set=expected.combine_chunks())
        unknown = len(pseudonyms) - pc.sum(known.cast(pa.int64())).as_py()
        if unknown:
            raise JobFailed(f"output invalid: {unknown} decisions for pseudonyms not in the input")
    missing = len(expected) - len(pseudonyms)
    if missing:
        raise JobFailed(f"output invalid: {missing} decisions missing")
    return pa.table({"pseudonym": pseudonyms, "decision": decisions}).combine_chunks()
