"""One client per role. Each method is one API call (or a small loop over one, like ``wait_for_job``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from clients.sdk._base import BaseClient
from clients.sdk._checkpoints import CheckpointMemory
from clients.sdk._exceptions import NotFound
from clients.sdk._export import read_access_export
from clients.sdk._linkage import run_linkage
from clients.sdk.models import (
    Budget,
    CatalogField,
    ConsentChange,
    ConsentEvent,
    ConsentMatrix,
    ConsentStats,
    ConsistencyProof,
    Contract,
    DataRequest,
    Declaration,
    GossipVerdict,
    InclusionProof,
    Job,
    LinkageResult,
    Model,
    ModelReview,
    MyLinkage,
    PartnerBudget,
    PointsSummary,
    QueuedJob,
    Redemption,
    Release,
    Reward,
    SignedCheckpoint,
    StewardContract,
    SubmissionCost,
    Usage,
    UsageProof,
    _load,
    _load_list,
)

TERMINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})


def _hashes(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


class CustomerClient(BaseClient):
    """A data subject (signs in with ``AuthorizationCode``).

    Set ``checkpoints`` to a ``CheckpointMemory`` and every call that fetches a usage-log checkpoint
    verifies it is consistent with the one remembered from before (``LogInconsistent`` otherwise)."""

    checkpoints: CheckpointMemory | None = None

    def _remember(self, note: str, keys: list[str]) -> None:
        if self.checkpoints is not None:
            self.checkpoints.check(
                note,
                keys,
                lambda a, b: _hashes(
                    _load(ConsistencyProof, self.get("/v1/me/usage/consistency", first=a, second=b)).hashes
                ),
            )

    def usage_checkpoint(self) -> SignedCheckpoint:
        """The usage log's latest checkpoint, with witness cosignatures and the witnesses' status."""
        cp = _load(SignedCheckpoint, self.get("/v1/me/usage/checkpoint"))
        self._remember(cp.note, cp.verifier_keys)
        return cp

    # The catalog's documents (the manual, purposes, partners) carry texts per language whose shape the
    # operator's catalog decides: they are returned as the server sends them.
    def manual(self) -> list[dict[str, Any]]:
        """The data manual: dimensions with their fields, in plain language."""
        return list(self.get("/v1/catalog/manual"))

    def purposes(self) -> list[dict[str, Any]]:
        """The purposes data may be used for (key, label, description, lawful basis, translations)."""
        return list(self.get("/v1/catalog/purposes"))

    def partners(self) -> list[dict[str, Any]]:
        """The partners (key, name, category, description, translations)."""
        return list(self.get("/v1/partners"))

    def consents(self) -> ConsentMatrix:
        """My consent matrix: fields (with data-manual text and points), purposes, partners, grants, and one
        cell per field x purpose x partner saying whether it is permitted now."""
        return _load(ConsentMatrix, self.get("/v1/me/consents"))

    def grant(
        self,
        *,
        purpose: str,
        field: str | None = None,
        dimension: str | None = None,
        partner: str | None = None,
        valid_until: str | None = None,
    ) -> ConsentChange:
        body = {
            k: v
            for k, v in {
                "purpose": purpose,
                "field": field,
                "dimension": dimension,
                "partner": partner,
                "valid_until": valid_until,
            }.items()
            if v is not None
        }
        return _load(ConsentChange, self.request("POST", "/v1/me/consents", json=body))

    def withdraw(self, grant_id: int | str) -> ConsentChange:
        return _load(ConsentChange, self.request("DELETE", f"/v1/me/consents/{grant_id}"))

    def consent_history(self, *, limit: int = 100) -> list[ConsentEvent]:
        return _load_list(ConsentEvent, self.get("/v1/me/consents/history", limit=limit))

    def receipt(self, receipt_id: str) -> dict[str, Any]:
        """A signed consent receipt, the JSON document exactly as signed (verify it with the keys at
        ``/v1/keys/receipts``; it stays a document, not a dataclass, so that its bytes can be checked)."""
        return dict(self.get(f"/v1/me/receipts/{receipt_id}"))

    def usage(self) -> Usage:
        """How my data was used: per field, each use (partner, purpose, time, result, ledger index)."""
        return _load(Usage, self.get("/v1/me/usage"))

    def usage_proof(self, index: int) -> UsageProof:
        proof = _load(UsageProof, self.get(f"/v1/me/usage/{index}/proof"))
        self._remember(proof.checkpoint, proof.verifier_keys)
        return proof

    def points(self) -> PointsSummary:
        return _load(PointsSummary, self.get("/v1/me/points"))

    def rewards(self) -> list[Reward]:
        return _load_list(Reward, self.get("/v1/rewards"))

    def redemptions(self) -> list[Redemption]:
        return _load_list(Redemption, self.get("/v1/me/redemptions"))

    def redeem(self, reward_key: str, *, quantity: int = 1, idempotency_key: str | None = None) -> Redemption:
        """Redeem a reward. The Idempotency-Key makes retries (ours and the caller's) safe: the server
        answers a repeated key with the same redemption instead of charging twice."""
        key = idempotency_key or uuid.uuid4().hex
        return _load(
            Redemption,
            self.request(
                "POST",
                "/v1/me/redemptions",
                json={"reward_key": reward_key, "quantity": quantity},
                headers={"Idempotency-Key": key},
            ),
        )

    def export(self, out: Path) -> dict[str, Any]:
        """Download everything the server holds about me (portability) to ``out`` as JSON Lines, streamed,
        then check it against its manifest; returns the manifest (record count and SHA-256 per section)."""
        with out.open("wb") as fh:
            self.download("/v1/me/export", fh)
        with out.open("rb") as fh:
            return dict(read_access_export(fh)["manifest"])

    def erase(self, *, confirm: str) -> Any:
        """Erase my account and data (irreversible); ``confirm`` must be the server's phrase, "erase my data"."""
        return self.request("DELETE", "/v1/me", params={"confirm": confirm})

    def linkage(self) -> MyLinkage:
        """Partners that may link their own records about me (what each brings, for which purpose) and those
        that did. Grant with ``grant(purpose=..., dimension="linkage", partner=...)``; withdrawing unlinks."""
        return _load(MyLinkage, self.get("/v1/me/linkage"))


class PartnerClient(BaseClient):
    """An ecosystem partner (client credentials)."""

    def contracts(self) -> list[Contract]:
        return _load_list(Contract, self.get("/v1/partner/contracts"))

    def contract(self, contract_id: int | str) -> Contract:
        return _load(Contract, self.get(f"/v1/partner/contracts/{contract_id}"))

    def propose_contract(self, contract: Mapping[str, Any]) -> Contract:
        """Propose a contract: ``contract`` is the API's body (purpose, title, features, decision_schema,
        k_min, epsilon_per_release, validity); stewards approve it, proposing spends nothing."""
        return _load(Contract, self.request("POST", "/v1/partner/contracts", json=dict(contract)))

    def models(self) -> list[Model]:
        return _load_list(Model, self.get("/v1/partner/models"))

    def upload_model(self, *, contract_id: int | str, model: Path | BinaryIO | bytes, kind: str = "onnx") -> Model:
        """Upload a model for a contract (the raw bytes are the request body)."""
        if isinstance(model, Path):
            content = model.read_bytes()
        elif isinstance(model, bytes):
            content = model
        else:
            content = model.read()
        return _load(
            Model,
            self.request(
                "POST",
                "/v1/partner/models",
                params={"contract_id": contract_id, "kind": kind},
                content=content,
                headers={"Content-Type": "application/octet-stream"},
            ),
        )

    def submit_job(self, *, model_id: int | str) -> Job:
        """Queue a job running one of my models under its approved contract (spends the contract's
        ``epsilon_per_release``: see ``submission_cost``)."""
        return _load(Job, self.request("POST", "/v1/partner/jobs", json={"model_id": int(model_id)}))

    def jobs(self) -> list[Job]:
        return _load_list(Job, self.get("/v1/partner/jobs"))

    def job(self, job_id: int | str) -> Job:
        return _load(Job, self.get(f"/v1/partner/jobs/{job_id}"))

    def wait_for_job(
        self,
        job_id: int | str,
        *,
        timeout: float = 600.0,
        interval: float = 0.5,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll a job until it reaches a terminal state; ``on_update`` sees every poll (progress display).

        A job shows ``queued`` until its outcome is released on the server's schedule (by default 5 minutes
        after submission, whatever the job did: run time must not leak data); a failure's ``error`` is one
        reason code (``model_failed``, ``output_invalid``, ``timeout``, ``resource_limit``, ``cancelled``,
        ``not_runnable``, ``sandbox_unavailable``, ``internal``)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job.status in TERMINAL_JOB_STATES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout:.0f}s")
            time.sleep(interval)

    def job_results(self, job_id: int | str) -> Release:
        """The DP-noised aggregate release of a finished job."""
        return _load(Release, self.get(f"/v1/partner/jobs/{job_id}/results"))

    def cancel_job(self, job_id: int | str) -> Job:
        return _load(Job, self.request("POST", f"/v1/partner/jobs/{job_id}/cancel"))

    def budget(self) -> list[Budget]:
        """Privacy budget (epsilon total, spent, remaining) per purpose."""
        return _load_list(Budget, self.get("/v1/partner/budget"))

    def fields(self) -> list[CatalogField]:
        """The catalog a contract is proposed from: each field's allowed transforms with their minimum
        coarseness (``transforms``) and that promise in words (``shared_as``, per language)."""
        return _load_list(CatalogField, self.get("/v1/catalog/fields"))

    def submission_cost(self, *, model_id: int | str) -> SubmissionCost:
        """What submitting a job with this model will spend, before spending it (spends nothing)."""
        model = next((m for m in self.models() if str(m.id) == str(model_id)), None)
        if model is None:
            raise NotFound(404, "Not found", f"no model {model_id}", code="not_found")
        contract = self.contract(model.contract_id)
        left = next((b for b in self.budget() if b.purpose == contract.purpose), None)
        return SubmissionCost(
            model_id=model.id,
            contract_id=contract.id,
            purpose=contract.purpose,
            epsilon=contract.epsilon_per_release,
            remaining=left.epsilon_remaining if left else None,
        )

    def declare_columns(self, *, contract_id: int, kind: str, columns: Sequence[Mapping[str, Any]]) -> Declaration:
        """Declare the columns of my own data a proposed contract brings (key, data_type, meaning,
        transforms, values) and the identifier they are matched on; approved with the contract."""
        body = {"contract_id": contract_id, "kind": kind, "columns": [dict(c) for c in columns]}
        return _load(Declaration, self.request("PUT", "/v1/partner/linkage/declarations", json=body))

    def declared_columns(self, contract_id: int) -> Declaration:
        return _load(Declaration, self.get(f"/v1/partner/linkage/declarations/{contract_id}"))

    def link(
        self,
        *,
        contract_id: int,
        records: Sequence[tuple[str, Mapping[str, Any]]],
        default_country_code: str | None = None,
    ) -> LinkageResult:
        """Link my records (identifier, column values) with the operator's customers who granted linkage,
        by private set intersection: raw identifiers stay on this machine, the columns go sealed. Returns
        the run with the DP count of matches (charged to my budget); I never learn which records matched."""
        return run_linkage(self, contract_id=contract_id, records=records, default_country_code=default_country_code)


class StewardClient(BaseClient):
    """The operator's data steward (catalog, partners, rewards, approvals)."""

    def fields(self, *, include_retired: bool = False) -> list[CatalogField]:
        return _load_list(CatalogField, self.get("/v1/catalog/fields", include_retired=include_retired or None))

    def create_field(self, field: Mapping[str, Any]) -> CatalogField:
        return _load(CatalogField, self.request("POST", "/v1/catalog/fields", json=dict(field)))

    def create_partner(self, partner: Mapping[str, Any]) -> dict[str, str]:
        """Create or update a partner (``key``, ``name``, ...); the server answers ``{"key": ..., "status": ...}``."""
        return dict(self.request("POST", "/v1/partners", json=dict(partner)))

    def create_reward(self, reward: Mapping[str, Any]) -> Reward:
        return _load(Reward, self.request("POST", "/v1/rewards", json=dict(reward)))

    def rewards(self) -> list[Reward]:
        return _load_list(Reward, self.get("/v1/rewards"))

    def ingest(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Ingest customer rows; the server's report (row counts, and each rejected row with its reason)."""
        return dict(self.request("POST", "/v1/ingest", json={"rows": [dict(r) for r in rows]}))

    def contracts(self, *, status: str | None = None) -> list[StewardContract]:
        return _load_list(StewardContract, self.get("/v1/contracts", status=status))

    def approve_contract(self, contract_id: int | str) -> StewardContract:
        return _load(StewardContract, self.request("POST", f"/v1/contracts/{contract_id}/approve"))

    def reject_contract(self, contract_id: int | str, *, reason: str = "") -> StewardContract:
        return _load(
            StewardContract, self.request("POST", f"/v1/contracts/{contract_id}/reject", json={"reason": reason})
        )

    def revoke_contract(self, contract_id: int | str, *, reason: str = "") -> StewardContract:
        """Revoke an approved contract: no new job starts under it."""
        return _load(
            StewardContract, self.request("POST", f"/v1/contracts/{contract_id}/revoke", json={"reason": reason})
        )

    def approve_model(self, model_id: int | str) -> Model:
        return _load(Model, self.request("POST", f"/v1/models/{model_id}/approve"))

    def models(self) -> list[Model]:
        return _load_list(Model, self.get("/v1/models"))

    def model_review(self, model_id: int | str) -> ModelReview:
        """A model for review: the checks it passed at upload, its approvals and, for Python, its source."""
        return _load(ModelReview, self.get(f"/v1/models/{model_id}/review"))

    def reject_model(self, model_id: int | str, *, reason: str = "") -> ModelReview:
        return _load(ModelReview, self.request("POST", f"/v1/models/{model_id}/reject", json={"reason": reason}))

    def budgets(self) -> list[PartnerBudget]:
        return _load_list(PartnerBudget, self.get("/v1/privacy-budgets"))

    def set_budget(self, *, partner: str, purpose: str, epsilon_total: float) -> Budget:
        body = {"partner_key": partner, "purpose": purpose, "epsilon_total": float(epsilon_total)}
        return _load(Budget, self.request("PUT", "/v1/privacy-budgets", json=body))

    def jobs(self, *, status: str | None = None, limit: int = 100) -> list[QueuedJob]:
        """The job queue, newest first (all partners; the true state and failure details)."""
        return _load_list(QueuedJob, self.get("/v1/jobs", status=status, limit=limit))

    def requests_log(self, *, kind: str | None = None) -> list[DataRequest]:
        """Access and erasure requests."""
        return _load_list(DataRequest, self.get("/v1/compliance/requests", kind=kind))

    def update_field(self, key: str, changes: Mapping[str, Any]) -> CatalogField:
        """Change a catalog field (its texts in every language via ``i18n``; each change is versioned)."""
        return _load(CatalogField, self.request("PATCH", f"/v1/catalog/fields/{key}", json=dict(changes)))


class ComplianceClient(BaseClient):
    """A compliance officer (read-only)."""

    def events(self, *, log: str = "audit", limit: int = 100, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every matching log entry as signed (its shape is the log's: audit or usage), with its ``id`` and
        ``index``, across pages (filters: since, until, subject_id, partner, action, actor)."""
        return self.paginate("/v1/audit/events", log=log, limit=limit, **filters)

    checkpoints: CheckpointMemory | None = None  # as CustomerClient's, for the audit and usage logs

    def checkpoint(self, *, log: str = "audit") -> SignedCheckpoint:
        cp = _load(SignedCheckpoint, self.get("/v1/audit/checkpoint", log=log))
        if self.checkpoints is not None:
            self.checkpoints.check(
                cp.note,
                cp.verifier_keys,
                lambda a, b: _hashes(self.consistency_proof(first=a, second=b, log=log).hashes),
            )
        return cp

    def export(self, out: Path, *, log: str = "audit", fmt: str = "jsonl") -> int:
        """Download a signed export to ``out``; returns its size in bytes."""
        with out.open("wb") as fh:
            return self.download("/v1/audit/export", fh, log=log, format=fmt)

    def inclusion_proof(self, *, index: int, tree_size: int, log: str = "audit") -> InclusionProof:
        return _load(InclusionProof, self.get("/v1/audit/proofs/inclusion", index=index, tree_size=tree_size, log=log))

    def consistency_proof(self, *, first: int, second: int, log: str = "audit") -> ConsistencyProof:
        return _load(ConsistencyProof, self.get("/v1/audit/proofs/consistency", first=first, second=second, log=log))

    def check_checkpoint(self, note: str) -> GossipVerdict:
        """Gossip: is a signed checkpoint someone was shown part of the log? verdict consistent / split-view / ahead."""
        return _load(
            GossipVerdict,
            self.request(
                "POST", "/v1/audit/checkpoints/check", content=note.encode(), headers={"Content-Type": "text/plain"}
            ),
        )

    def consent_statistics(self, **filters: Any) -> ConsentStats:
        """Authorization rate series per field x purpose x partner (filters: since, until, step_hours, field,
        purpose, partner)."""
        return _load(ConsentStats, self.get("/v1/consents/stats", **filters))

    def processing_records(self) -> dict[str, Any]:
        """Records of processing (GDPR art. 30): ``controller`` (name, contact, DPO) and one record per purpose,
        a regulatory document kept as the server wrote it."""
        return dict(self.get("/v1/compliance/records-of-processing"))

    def requests_log(self, *, kind: str | None = None) -> list[DataRequest]:
        """Access and erasure requests."""
        return _load_list(DataRequest, self.get("/v1/compliance/requests", kind=kind))

    def audit_actions(self, *, log: str = "audit") -> list[str]:
        """The actions recorded in a log: the values the ``action`` filter of ``events`` can match."""
        return list(self.get("/v1/audit/actions", log=log)["actions"])
