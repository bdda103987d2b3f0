"""Schemathesis against the app's own OpenAPI document, on a seeded database, once per role (and with no
token): every operation gets schema-valid and schema-violating requests. Nothing may answer 5xx, every
status must be one the document lists for that operation (``status_code_conformance``: the document is
generated from the routes, ``dataspace.http.openapi``), every 4xx must be an RFC 7807 problem+json body, and
responses must match the schema where one is declared.

The OAuth protocol endpoints answer in their RFCs' own formats (RFC 6749 ``{"error": ...}`` JSON, the HTML
sign-in page), and the web pages are static files, so those are only held to "no 5xx"; the OAuth form
endpoints (not described by the OpenAPI document) get random forms from hypothesis directly.

Bounded and deterministic: a few examples per operation, derandomized, no example database.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import traceback
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from dataspace.app import create_app
from dataspace.consents import changes as consent_changes
from dataspace.consents.changes import GrantRequest
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.ingest.service import ingest_rows
from dataspace.points import earning, redemption
from dataspace.points import rewards as points_rewards
from dataspace.points.schemas import RewardCreate
from dataspace.principal import Principal
from dataspace.subjects.models import Subject
from tests.factories.catalog import customer_row, load_demo_catalog
from tests.factories.identities import bearer, issue_token

ROLES = ("customer", "partner", "steward", "compliance", "anonymous")
PARTNER = "harbor_insurance"
# Examples per operation and run: (schema-valid, schema-violating, with a real row in the path). Without a
# token every request stops at authentication, so a couple per operation say all there is to say.
EXAMPLES = {"anonymous": (2, 2, 1)}
DEFAULT_EXAMPLES = (5, 3, 3)
# Fixed query parameters for operations whose cost grows with them (the rest is still fuzzed):
# /v1/consents/stats over a year of hourly buckets takes over 10 s (reported to the consents owner).
BOUNDED_QUERY: dict[str, dict[str, Any]] = {"/v1/consents/stats": {"step_hours": 24}}
# Protocol endpoints with their own (RFC 6749/7009/7662, HTML) error formats: held to "no 5xx" only.
NOT_PROBLEM_JSON = ("/oauth/", "/.well-known/")
PROBLEM_MEMBERS = ("type", "title", "status", "detail")
# 5xx found by this suite in packages still being written (reported to their owners, not fixed here). A
# role's run that fails ONLY on these is an xfail; any other failure fails it. Delete an entry once fixed.
KNOWN_BUGS: dict[str, str] = {}  # "METHOD /path": where the bug is; empty: none known


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


class World:
    """What the seeded database holds, for tokens and for path parameters that name real rows."""

    def __init__(self, ctx: Context) -> None:
        load_demo_catalog(ctx)
        ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row(f"fuzz-{i}", age=30 + i) for i in range(3)])
        with ctx.db.session() as session:
            self.subjects = list(session.scalars(select(Subject.id).order_by(Subject.id)))
        subject = self.subjects[0]
        actor = Principal(subject=f"user{subject}", role="customer", client_id="fuzz", subject_id=subject)
        now = utcnow()
        with ctx.db.transaction() as session:
            changes = [
                consent_changes.grant(
                    session,
                    subject_id=subject,
                    request=GrantRequest(purpose="insurance_offer", field=field, partner=PARTNER),
                    signer=ctx.keys.signing_key,
                    actor=actor,
                )
                for field in ("age", "city", "ev_owner")
            ]
            consent_changes.grant(
                session,
                subject_id=subject,
                request=GrantRequest(
                    purpose="charging_booking",
                    dimension="behaviour",
                    partner_category="charging",
                    valid_until=now + timedelta(days=30),
                ),
                signer=ctx.keys.signing_key,
                actor=actor,
            )
            for field in ("age", "city", "ev_owner"):
                earning.award_authorization_bonus(session, subject_id=subject, field_key=field, now=now)
            points_rewards.create_reward(session, data=RewardCreate(key="lounge", name="Lounge", cost=50, stock=20))
            points_rewards.create_reward(
                session, data=RewardCreate(key="checkup", name="Health check", cost=500, stock=1)
            )
            redemption.redeem(session, subject_id=subject, reward_key="lounge", idempotency_key="seed-1", now=now)
            self.grant_id = changes[0].grant.id
            self.receipt_id = changes[0].receipt_id
        self.tokens: dict[str, str | None] = {
            "customer": issue_token(ctx, "customer", subject_id=subject),
            "partner": issue_token(ctx, "partner", partner_key=PARTNER),
            "steward": issue_token(ctx, "steward"),
            "compliance": issue_token(ctx, "compliance"),
            "anonymous": None,
        }

    def known_path_parameters(self) -> dict[str, dict[str, Any]]:
        """Operations whose path names a row: also fuzz them with a real one, so the success paths run."""
        return {
            "/v1/catalog/fields/{key}": {"key": "age"},
            "/v1/catalog/fields/{key}/history": {"key": "city"},
            "/v1/rewards/{key}": {"key": "lounge"},
            "/v1/me/consents/{grant_id}": {"grant_id": self.grant_id},
            "/v1/me/consents/{grant_id}/renew": {"grant_id": self.grant_id},
            "/v1/me/receipts/{receipt_id}": {"receipt_id": self.receipt_id},
            "/v1/me/receipts/{receipt_id}/kantara": {"receipt_id": self.receipt_id},
            "/v1/me/usage/{index}/proof": {"index": 0},
            "/v1/events/schemas/{event_type}/v{version}": {"event_type": "job.completed", "version": 1},
        }


def problem_failure(path: str, status: int, headers: dict[str, list[str]], content: bytes) -> str | None:
    """Why this response is not the RFC 7807 error the API promises, or None when it is (or need not be)."""
    if not 400 <= status < 600 or path.startswith(NOT_PROBLEM_JSON):
        return None
    ctype = (headers.get("content-type") or [""])[0]
    if not ctype.startswith("application/problem+json"):
        return f"{status} with content-type {ctype!r}, not application/problem+json"
    try:
        body = json.loads(content)
    except ValueError:
        return f"{status} problem+json body is not JSON: {content[:200]!r}"
    if not isinstance(body, dict):
        return f"{status} problem+json body is not an object: {content[:200]!r}"
    missing = [m for m in PROBLEM_MEMBERS if not isinstance(body.get(m), int if m == "status" else str)]
    if missing:
        return f"{status} problem+json body lacks {missing}: {content[:300]!r}"
    if body["status"] != status:
        return f"problem status {body['status']} != HTTP status {status}"
    return None


def _describe(exc: BaseException) -> str:
    """The failure, its reproduction (schemathesis notes a curl command) and the project's own frames."""
    if isinstance(exc, BaseExceptionGroup) and not isinstance(exc, FailureGroup):
        return "\n".join(_describe(sub) for sub in exc.exceptions)
    lines = [f"{type(exc).__name__}: {str(exc)[:1500]}"]
    lines += [note[:1500] for note in getattr(exc, "__notes__", [])]
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/site-packages/" not in f.filename]
    lines += [f"  {f.filename}:{f.lineno} in {f.name}: {f.line}" for f in frames[-8:]]
    return "\n".join(lines)


# Drawn cases, by (document, operation, mode, examples, path parameters). Derandomized, what hypothesis draws
# for an operation depends on the document and these only, not on the role or the database: each process
# draws them once, and every later role (and backend) sends exactly the same requests without drawing them
# again. Only complete draws are kept (a failure stops one early); None: nothing satisfiable to draw.
_DRAWN: dict[tuple[str, str, GenerationMode, int, str], list[dict[str, Any]] | None] = {}


def _case_data(case: Any) -> dict[str, Any]:
    """What a case sends (and its generation metadata), detached from the app it was drawn against."""
    data = {
        "method": case.method,
        "path_parameters": case.path_parameters,
        "headers": dict(case.headers),
        "cookies": case.cookies,
        "query": case.query,
        "media_type": case.media_type,
        "multipart_content_types": case.multipart_content_types,
    }
    data = copy.deepcopy(data)
    data["body"] = case.body if case.body is NOT_SET else copy.deepcopy(case.body)
    data["_meta"] = case.meta
    return data


def _replay(operation: Any, data: dict[str, Any]) -> Any:
    body = data["body"]
    detached = {k: v for k, v in data.items() if k not in {"body", "_meta"}}
    return operation.Case(
        **copy.deepcopy(detached), body=body if body is NOT_SET else copy.deepcopy(body), _meta=data["_meta"]
    )


def run_operation(
    operation: Any,
    mode: GenerationMode,
    token: str | None,
    max_examples: int,
    path_parameters: dict[str, Any] | None = None,
    *,
    document: str,
) -> None:
    headers = bearer(token) if token else None
    query = BOUNDED_QUERY.get(operation.path)

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters, query=query))
    @fuzz_settings(max_examples)
    def fuzz(case: Any) -> None:
        response = case.call(headers=headers)
        case.validate_response(
            response,
            checks=[not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance],
            headers=headers,
        )
        reason = problem_failure(operation.path, response.status_code, response.headers, response.content)
        if reason is not None:
            raise AssertionError(f"{operation.label}: {reason}\n{case.as_curl_command()}")

    check = fuzz.hypothesis.inner_test
    key = (document, operation.label, mode, max_examples, json.dumps(path_parameters, sort_keys=True))
    if key in _DRAWN:
        drawn = _DRAWN[key]
        if drawn is None:
            raise Unsatisfiable(f"{operation.label}: nothing to draw in {mode.value} mode")
        for data in drawn:
            case = _replay(operation, data)
            try:
                check(case)
            except (Exception, BaseExceptionGroup) as exc:
                exc.add_note(f"Replayed case: {case.as_curl_command()}")
                raise
        return

    drawing: list[dict[str, Any]] = []

    @functools.wraps(check)  # hypothesis seeds derandomized draws from the source: keep those of fuzz itself
    def recording(case: Any) -> None:
        drawing.append(_case_data(case))
        check(case)

    fuzz.hypothesis.inner_test = recording
    try:
        fuzz()
    except Unsatisfiable:
        _DRAWN[key] = None
        raise
    _DRAWN[key] = drawing


def _has_input(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


def _operations(app: FastAPI) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = [result.ok() for result in schema.get_all_operations()]
    # Destructive calls last (DELETE /v1/me would erase the customer every later call acts as).
    return sorted(ops, key=lambda op: (op.method.upper() == "DELETE", op.path == "/v1/me"))


@pytest.mark.parametrize("role", ROLES)
def test_openapi_operations_never_fail_and_errors_are_problems(ctx: Context, role: str) -> None:
    world = World(ctx)
    app = create_app(ctx)
    token = world.tokens[role]
    known = world.known_path_parameters()
    failures: list[str] = []
    operations = _operations(app)
    document = hashlib.sha256(json.dumps(app.openapi(), sort_keys=True).encode()).hexdigest()
    assert len(operations) > 50
    positive, negative, with_known = EXAMPLES.get(role, DEFAULT_EXAMPLES)
    for operation in operations:
        runs: list[tuple[GenerationMode, int, dict[str, Any] | None]] = [(GenerationMode.POSITIVE, positive, None)]
        if operation.path in known:
            runs.append((GenerationMode.POSITIVE, with_known, known[operation.path]))
        if _has_input(operation):
            runs.append((GenerationMode.NEGATIVE, negative, None))
        for mode, max_examples, path_parameters in runs:
            try:
                run_operation(operation, mode, token, max_examples, path_parameters, document=document)
            except Unsatisfiable:
                continue  # nothing to negate (e.g. only an optional boolean): the positive run covered it
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  all collected, reported together
                failures.append(f"--- {operation.label} as {role} ({mode.value}):\n{_describe(exc)}")
    report = f"{len(failures)} failing operation(s):\n" + "\n".join(failures)
    if failures and all(f.split(" as ")[0].removeprefix("--- ") in KNOWN_BUGS for f in failures):
        pytest.xfail(f"only known bugs of packages in progress (see KNOWN_BUGS):\n{report}")
    assert not failures, report


OAUTH_PARAMS = (
    "grant_type", "client_id", "client_secret", "code", "code_verifier", "redirect_uri", "refresh_token",
    "scope", "token", "token_type_hint", "response_type", "state", "code_challenge", "code_challenge_method",
    "username", "password", "action",
)  # fmt: skip
GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token", "password", "implicit")
oauth_values = st.one_of(
    st.sampled_from((*GRANT_TYPES, "code", "S256", "plain", "allow", "deny", "test-portal")),
    st.text(max_size=40),
)
oauth_forms = st.dictionaries(st.sampled_from(OAUTH_PARAMS), oauth_values, max_size=8)


def test_oauth_and_pages_never_fail(ctx: Context) -> None:
    """The form endpoints the OpenAPI document cannot describe, and the static pages: never a 5xx."""
    world = World(ctx)
    app = create_app(ctx)
    token = world.tokens["steward"]
    failures: list[str] = []
    with TestClient(app, raise_server_exceptions=False) as client:

        @given(
            path=st.sampled_from(["/oauth/token", "/oauth/revoke", "/oauth/introspect", "/oauth/authorize"]),
            form=oauth_forms,
            auth=st.booleans(),
            as_query=st.booleans(),
        )
        @fuzz_settings(120)
        def oauth(path: str, form: dict[str, str], auth: bool, as_query: bool) -> None:
            headers = bearer(token) if auth else {}
            if as_query and path == "/oauth/authorize":
                response = client.get(path, params=form, headers=headers)
            else:
                response = client.post(path, data=form, headers=headers)
            if response.status_code >= 500:
                failures.append(f"POST {path} {form!r}: {response.status_code} {response.text[:300]}")

        @given(
            prefix=st.sampled_from(["/portal/", "/console/", "/partner/", "/static/", "/v1/", "/"]),
            rest=st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=30),
        )
        @fuzz_settings(60)
        def pages(prefix: str, rest: str) -> None:
            response = client.get(prefix + rest.lstrip("/"))
            if response.status_code >= 500:
                failures.append(f"GET {prefix + rest!r}: {response.status_code} {response.text[:300]}")

        oauth()
        pages()
    assert not failures, "\n".join(failures[:20])
