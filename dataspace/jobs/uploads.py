"""Model uploads: ONNX models are checked against their contract inside the sandbox before anything is
stored; Python scoring modules are stored for review and run only once stewards approve them."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.agreements import contracts
from dataspace.agreements.models import Contract, PartnerModel
from dataspace.audit import record_event
from dataspace.db import utcnow
from dataspace.emission import parse_features
from dataspace.emission.service import catalog_fields
from dataspace.emission.specs import column_name
from dataspace.emission.transforms import output_type
from dataspace.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from dataspace.linkage import join
from dataspace.principal import Principal
from sandbox import ModelRejected, SandboxUnavailable, inspect_onnx

log = logging.getLogger("dataspace.jobs")

MAX_ONNX_BYTES = 20 << 20
MAX_PYTHON_BYTES = 256 << 10
KINDS = ("onnx", "python")


# Compiles partner source in a child process with its own limits: a deeply nested expression makes the
# compiler recurse (RecursionError, MemoryError, or a C stack overflow that kills the process), which must
# cost a child, never the server. The limits are set before the source is read.
_COMPILE_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (256 << 20, 256 << 20))
resource.setrlimit(resource.RLIMIT_CPU, (5, 5))
resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
source = sys.stdin.buffer.read()
try:
    compile(source.decode("utf-8"), "<partner module>", "exec", dont_inherit=True)
except (UnicodeDecodeError, SyntaxError, ValueError):
    sys.exit(3)
sys.exit(0)
"""
COMPILE_TIMEOUT = 10.0


def check_python_source(data: bytes) -> None:
    """Refuse a module that is not UTF-8 Python source that compiles (``InvalidInput``), compiling it in a
    bounded child process (address space, CPU, wall clock), so hostile source cannot crash the server."""
    try:
        done = subprocess.run(  # our own interpreter and a fixed script; the source goes to stdin
            [sys.executable, "-I", "-S", "-c", _COMPILE_CHILD],
            input=data,
            capture_output=True,
            timeout=COMPILE_TIMEOUT,
            check=False,
            env={},
        )
    except subprocess.TimeoutExpired:
        raise InvalidInput("the module is not valid UTF-8 Python source (compiling it took too long)") from None
    if done.returncode != 0:
        log.info("python module refused", extra={"status": done.returncode, "stderr": done.stderr[-300:]})
        raise InvalidInput("the module is not valid UTF-8 Python source")


def feature_columns(session: Session, contract: Contract) -> list[tuple[str, bool]]:
    """The contract's emitted columns in order, each with whether it is numeric (ONNX takes numbers only)."""
    specs = parse_features(contract.features)
    fields = catalog_fields(session, [s.field for s in specs])
    out = []
    for spec in specs:
        field = fields.get(spec.field)
        if field is None:
            raise Conflict(f"contract field {spec.field!r} is no longer in the catalog")
        t = output_type(spec, field.data_type)
        out.append((column_name(spec), str(t) == "double"))
    return out + [(name, True) for name in join.feature_names(session, contract_id=contract.id)]


def upload(session: Session, *, principal: Principal, contract_id: int, kind: str, data: bytes) -> PartnerModel:
    """Validate and store a model for one of the partner's contracts; nothing is stored if it is refused."""
    contract = contracts.get_owned(session, principal=principal, contract_id=contract_id)
    now = utcnow()
    contracts.require_usable(contract, now)
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
    if not data:
        raise InvalidInput("the model is empty")
    schema = contracts.decision_schema_of(contract.decision_schema)
    signature: dict[str, object]
    if kind == "onnx":
        if len(data) > MAX_ONNX_BYTES:
            raise InvalidInput(f"the model is {len(data)} bytes; the limit is {MAX_ONNX_BYTES}")
        columns = feature_columns(session, contract)
        non_numeric = [name for name, numeric in columns if not numeric]
        if non_numeric:
            raise InvalidInput(
                f"this contract emits non-numeric features ({', '.join(non_numeric)}); ONNX models take numbers "
                "only: use bin/quantile/topcode transforms or an approved Python module"
            )
        try:
            info = inspect_onnx(data, feature_names=[n for n, _ in columns], schema=schema, max_bytes=MAX_ONNX_BYTES)
        except ModelRejected as exc:
            # ``detail`` may be text chosen by the model: for the operator's log only.
            log.info("model rejected", extra={"contract_id": contract.id, "reason": exc.reason, "detail": exc.detail})
            raise InvalidInput(exc.reason) from None
        except SandboxUnavailable as exc:
            raise Unavailable("the model sandbox is unavailable on this server") from exc
        status = "ready"
        signature = {
            "inputs": [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in info.inputs],
            "outputs": [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in info.outputs],
            "output_name": info.output_name,
            "feature_count": info.feature_count,
        }
    else:
        if len(data) > MAX_PYTHON_BYTES:
            raise InvalidInput(f"the module is {len(data)} bytes; the limit is {MAX_PYTHON_BYTES}")
        check_python_source(data)
        status = "uploaded"
        signature = {"feature_names": [n for n, _ in feature_columns(session, contract)]}
    model = PartnerModel(
        partner_id=contract.partner_id,
        contract_id=contract.id,
        kind=kind,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        data=data,
        status=status,
        signature=signature,
        approvals=[],
        uploaded_by=principal.actor,
        created_at=now,
    )
    session.add(model)
    session.flush()
    record_event(
        session,
        actor=principal,
        action="model.uploaded",
        target=f"model:{model.id}",
        details={"contract_id": contract.id, "kind": kind, "sha256": model.sha256, "status": status},
    )
    return model


def get_owned(session: Session, *, principal: Principal, model_id: int) -> PartnerModel:
    model = session.get(PartnerModel, model_id)
    if model is None or principal.partner_id is None or model.partner_id != principal.partner_id:
        raise NotFound("no such model")
    return model


def list_for_partner(session: Session, *, principal: Principal) -> list[PartnerModel]:
    if principal.partner_id is None:
        return []
    stmt = select(PartnerModel).where(PartnerModel.partner_id == principal.partner_id).order_by(PartnerModel.id)
    return list(session.scalars(stmt))


def list_all(session: Session) -> list[PartnerModel]:
    return list(session.scalars(select(PartnerModel).order_by(PartnerModel.id)))


def approve(session: Session, *, principal: Principal, model_id: int) -> PartnerModel:
    """A steward's approval of code-bearing (Python) models; sensitive contracts need two stewards."""
    if principal.role != "steward":
        raise Forbidden()
    model = session.scalar(select(PartnerModel).where(PartnerModel.id == model_id).with_for_update())
    if model is None:
        raise NotFound("no such model")
    if model.kind != "python":
        raise Conflict("ONNX models need no approval; they are usable once their signature is validated")
    if model.status != "uploaded":
        raise Conflict(f"model is {model.status}")
    if principal.actor in model.approvals:
        raise Conflict("you already approved this model; another steward must approve it too")
    contract = session.get(Contract, model.contract_id)
    assert contract is not None
    model.approvals = [*model.approvals, principal.actor]
    if len(model.approvals) >= contract.required_approvals:
        model.status = "approved"
    session.flush()
    record_event(
        session,
        actor=principal,
        action="model.approved" if model.status == "approved" else "model.approval_recorded",
        target=f"model:{model.id}",
        details={"approvals": len(model.approvals), "required": contract.required_approvals},
    )
    return model


def reject(session: Session, *, principal: Principal, model_id: int, reason: str = "") -> PartnerModel:
    """A steward refuses a Python model awaiting review: it can never run (one steward suffices to refuse)."""
    if principal.role != "steward":
        raise Forbidden()
    model = session.scalar(select(PartnerModel).where(PartnerModel.id == model_id).with_for_update())
    if model is None:
        raise NotFound("no such model")
    if model.kind != "python" or model.status != "uploaded":
        raise Conflict(f"only a Python model awaiting review can be rejected; this one is {model.status}")
    model.status = "rejected"
    session.flush()
    record_event(
        session, actor=principal, action="model.rejected", target=f"model:{model.id}", details={"reason": reason[:1000]}
    )
    return model


def review_checks(model: PartnerModel) -> list[dict[str, object]]:
    """What the server checked when the model was uploaded (each passed, or the upload was refused)."""
    if model.kind == "onnx":
        return [
            {"check": "size", "limit": MAX_ONNX_BYTES},
            {"check": "onnx_signature", "features": model.signature.get("feature_count")},
            {"check": "decision_schema"},
        ]
    return [
        {"check": "size", "limit": MAX_PYTHON_BYTES},
        {"check": "utf8_compiles"},
        {"check": "feature_names", "features": len(model.signature.get("feature_names", []))},
    ]


def is_runnable(model: PartnerModel) -> bool:
    return (model.kind == "onnx" and model.status == "ready") or (model.kind == "python" and model.status == "approved")
