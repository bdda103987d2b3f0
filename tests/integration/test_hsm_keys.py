"""The server with every HSM-capable key in a PKCS#11 token (SoftHSM2): access tokens (ES256), consent
receipts (Ed25519) and profile data keys (epoch keys) are signed and unwrapped inside the token, verify
offline with the published public keys, and survive a rotation."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from dataspace.app import create_app
from dataspace.cli import app as cli_app
from dataspace.context import Context
from dataspace.db import utcnow
from dataspace.ingest.service import ingest_rows
from dataspace.keys import KeyRing, load_key_file, save_key_file
from dataspace.pkcs11 import Pkcs11Ed25519Key, Pkcs11TokenKey, configured_token
from dataspace.subjects.models import KeyEpoch, Subject, SubjectKey
from dataspace.subjects.store import read_profile
from tests.factories.catalog import customer_row, load_demo_catalog
from tests.factories.identities import bearer, issue_token, make_subject
from tests.softhsm import MODULE, TokenPool, softhsm  # noqa: F401  (the fixture)

AGE = {"field": "age", "purpose": "insurance_offer", "partner": "harbor_insurance"}


@pytest.fixture
def hsm_ctx(ctx: Context, softhsm: TokenPool, tmp_path, monkeypatch) -> Context:  # noqa: F811
    label = softhsm.take()
    monkeypatch.setenv("DATASPACE_PKCS11_MODULE", MODULE)
    monkeypatch.setenv("DATASPACE_PKCS11_TOKEN_LABEL", label)
    monkeypatch.setenv("DATASPACE_PKCS11_PIN_ENV", "DATASPACE_TEST_PKCS11_PIN")
    settings = ctx.settings.model_copy(
        update={
            "data_dir": tmp_path,
            "key_backend": "pkcs11",
            "pkcs11_module": MODULE,
            "pkcs11_token_label": label,
            "pkcs11_pin_env": "DATASPACE_TEST_PKCS11_PIN",
        }
    )
    return Context(settings=settings, db=ctx.db, keys=KeyRing.generate(configured_token()))


@pytest.fixture
def client(hsm_ctx: Context) -> Iterator[TestClient]:
    load_demo_catalog(hsm_ctx)
    with TestClient(create_app(hsm_ctx)) as c:
        yield c


def test_tokens_receipts_and_profiles_through_the_hsm_and_after_a_rotation(client, hsm_ctx, tmp_path):
    ctx = hsm_ctx
    assert isinstance(ctx.keys.signing_key, Pkcs11Ed25519Key)
    assert isinstance(ctx.keys.token_key, Pkcs11TokenKey)
    key_file = tmp_path / "keys.json"
    save_key_file(key_file, ctx.keys)
    text = key_file.read_text()
    assert "seed" not in text
    assert "PRIVATE" not in text  # neither private key ever left the module

    sid = make_subject(ctx)
    me = bearer(issue_token(ctx, "customer", subject_id=sid))  # ES256, signed in the token
    assert client.get("/oauth/jwks").json()["keys"][0]["kid"] == ctx.keys.token_key.kid
    r = client.post("/v1/me/consents", json=AGE, headers=me)
    assert r.status_code == 201, r.text
    rid = r.json()["receipt_id"]

    ctx.keys.rotate(configured_token())
    ctx.keys = load_key_file(_saved(ctx, key_file))  # as a server reloads a rotated key file
    assert client.get("/v1/me/consents", headers=me).status_code == 200  # the old token still verifies
    me2 = bearer(issue_token(ctx, "customer", subject_id=sid))
    assert client.get("/v1/me/consents", headers=me2).status_code == 200
    header, claims, signature = me2["Authorization"].removeprefix("Bearer ").split(".")
    tampered = claims[:-2] + ("A" if claims[-2] != "A" else "B") + claims[-1]
    assert client.get("/v1/me/consents", headers=bearer(f"{header}.{tampered}.{signature}")).status_code == 401

    keys = tmp_path / "receipt-keys.json"
    keys.write_text(client.get("/v1/keys/receipts").text)
    receipt = tmp_path / "receipt.json"
    receipt.write_bytes(client.get(f"/v1/me/receipts/{rid}", headers=me2).content)
    runner = CliRunner()
    ok = runner.invoke(cli_app, ["receipts", "verify", str(receipt), "--keys", str(keys)])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(receipt.read_text())
    doc["purposes"] = ["something_else"]
    receipt.write_text(json.dumps(doc))
    assert runner.invoke(cli_app, ["receipts", "verify", str(receipt), "--keys", str(keys)]).exit_code == 1

    ingest_rows(ctx.db, ctx.keys, ctx.vault, [customer_row("H1", age=57)])  # the data key is wrapped inside the token
    with ctx.db.session() as s:
        new = s.scalar(select(Subject.id).where(Subject.blind_ref == ctx.keys.blind_index("H1")))
        assert read_profile(s, ctx.vault, new)["age"] == 57
        assert s.scalar(select(SubjectKey.epoch).where(SubjectKey.subject_id == new)) == 0
    assert ctx.vault.inventory() == {ctx.vault.bucket(new): [0]}  # the epoch key is an object of the token


def _saved(ctx: Context, path):
    save_key_file(path, ctx.keys)
    return path


def test_emission_unwraps_inside_the_token_inline_and_in_worker_processes(hsm_ctx):
    """The bulk path with the HSM backend: spawned workers open the token themselves (no key travels), give
    the same emission as the inline run, and a subject whose epoch key was destroyed is counted unreadable."""
    from dataspace.subjects.epochs import retire
    from tests.integration.test_emission import add_catalog, add_subjects, run, table_of

    ctx = hsm_ctx
    add_catalog(ctx)
    ids = list(add_subjects(ctx, 48).values())
    inline = run(ctx, ids, workers=1)
    parallel = run(ctx, ids, workers=2)
    assert inline.stats.unreadable == 0
    assert table_of(parallel).equals(table_of(inline))

    # A wrapping under a destroyed key (as in a restored backup) opens in neither path.
    victim = ids[0]
    with ctx.db.session() as s:
        old = s.execute(select(SubjectKey.epoch, SubjectKey.wrapped_key).where(SubjectKey.subject_id == victim)).one()
    with ctx.db.transaction() as s:
        s.execute(
            update(KeyEpoch).where(KeyEpoch.bucket == ctx.vault.bucket(victim)).values(retire_requested_at=utcnow())
        )
    retire(ctx.db, ctx.vault)
    with ctx.db.transaction() as s:
        s.execute(
            update(SubjectKey)
            .where(SubjectKey.subject_id == victim)
            .values(epoch=old.epoch, wrapped_key=old.wrapped_key)
        )
    for workers in (1, 2):
        assert run(ctx, ids, workers=workers).stats.unreadable == 1


def test_init_and_rotate_generate_the_signing_keys_in_the_hsm(softhsm, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DATASPACE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATASPACE_DATABASE_URL", f"sqlite:///{tmp_path / 'init.db'}")
    monkeypatch.setenv("DATASPACE_KEY_BACKEND", "pkcs11")
    monkeypatch.setenv("DATASPACE_PKCS11_MODULE", MODULE)
    monkeypatch.setenv("DATASPACE_PKCS11_TOKEN_LABEL", softhsm.take())
    monkeypatch.setenv("DATASPACE_PKCS11_PIN_ENV", "DATASPACE_TEST_PKCS11_PIN")
    runner = CliRunner()
    out = runner.invoke(cli_app, ["init"])
    assert out.exit_code == 0, out.output
    first = load_key_file(tmp_path / "keys.json")
    out = runner.invoke(cli_app, ["keys", "rotate"])
    assert out.exit_code == 0, out.output
    text = (tmp_path / "keys.json").read_text()
    assert "seed" not in text
    assert "PRIVATE" not in text
    ring = load_key_file(tmp_path / "keys.json")
    assert [k.kid for k in ring.signing_keys][1:] == [first.signing_key.kid]
    assert isinstance(ring.signing_key, Pkcs11Ed25519Key)
    assert isinstance(ring.token_key, Pkcs11TokenKey)
    for key in ring.signing_keys:  # every key, old and new, still signs inside the token
        ring.verify_keys()[key.kid].verify(b"m", key.sign(b"m"))
