"""The SDK's examples run: every ``python`` snippet of the README that uses ``clients.sdk``, and the example
in the SDK's docstring, executed as written against a real server (the browser sign-in is a stand-in browser
posting the real sign-in page; the environment is what the README's shell lines export)."""

from __future__ import annotations

import re
import textwrap
from functools import partial
from pathlib import Path

import pytest

import clients.sdk
from clients.sdk import AuthorizationCode
from dataspace.audit import record_event
from dataspace.auth.web_clients import ensure_web_clients
from dataspace.context import Context
from tests.factories import jobs as js
from tests.factories.identities import make_client, make_user
from tests.integration.oauth_server import running_server
from tests.integration.sdk_support import cli_client_on, free_port, login_as

README = Path(__file__).resolve().parents[2] / "README.md"
# Who signs in through the browser for each client a snippet builds (the demo's accounts of those roles).
SIGN_IN = {"StewardClient": "steward", "ComplianceClient": "auditor", "CustomerClient": "alice"}


def readme_snippets() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return [b for b in blocks if "from clients.sdk import" in b]


def docstring_example() -> str:
    doc = clients.sdk.__doc__ or ""
    block = doc.split("\n\n")[1:3]  # the indented import line, then the indented example
    return textwrap.dedent("\n\n".join(block))


def test_the_readme_has_sdk_snippets_for_every_role() -> None:
    used = {role for snippet in readme_snippets() for role in re.findall(r"\b(\w+Client)\(", snippet)}
    assert used == {"PartnerClient", "StewardClient", "ComplianceClient", "CustomerClient"}


def test_readme_and_docstring_examples_run(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    js.build_world(ctx, n=30)
    model_id = js.upload_onnx(ctx, js.approved_contract(ctx))
    for role, name in (("steward", "steward"), ("compliance", "auditor"), ("customer", "alice")):
        make_user(ctx, role, username=name)
    partner = make_client(ctx, "partner", partner_key=js.PARTNER)
    with ctx.db.transaction() as s:
        record_event(s, actor=None, action="test.readme", target="t:1")
    port = free_port()
    with running_server(ctx) as (base, served):
        ensure_web_clients(served.settings, served.db)
        for client_id in ("steward-cli", "compliance-cli", "customer-cli"):
            cli_client_on(served, client_id, port)
        monkeypatch.setenv("DATASPACE_URL", base)
        monkeypatch.setenv("DATASPACE_CLIENT_ID", partner.client.client_id)
        monkeypatch.setenv("DATASPACE_CLIENT_SECRET", partner.secret or "")
        for snippet in readme_snippets():
            (role,) = set(re.findall(r"\b(\w+Client)\(", snippet))
            if role in SIGN_IN:  # the snippet imports AuthorizationCode from clients.sdk: sign in as that role
                browser = login_as(SIGN_IN[role])
                monkeypatch.setattr(
                    clients.sdk, "AuthorizationCode", partial(AuthorizationCode, port=port, open_browser=browser)
                )
            exec(compile(snippet, f"README.md ({role})", "exec"), {})
            assert capsys.readouterr().out.strip(), f"the {role} snippet printed nothing"

        example = docstring_example()
        assert "submit_job(model_id=7)" in example
        example = example.replace('"https://dataspace.example"', repr(base)).replace('"acme"', "client_id")
        example = example.replace("model_id=7", f"model_id={model_id}")
        exec(
            compile(example, "clients/sdk/__init__.py (docstring)", "exec"),
            {"client_id": partner.client.client_id, "secret": partner.secret},
        )
        printed = capsys.readouterr().out.split()
        assert printed[0] == "epsilon"
        assert printed[-1] == "queued"
