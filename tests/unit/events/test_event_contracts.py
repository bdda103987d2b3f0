from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from dataspace.errors import InvalidInput
from dataspace.events.schemas import CONTRACTS, SCHEMA_DIR, all_schemas
from dataspace.events.service import InvalidSignature, check_url, sign, verify_signature
from dataspace.keys import KeyRing


def test_published_schema_files_match_the_models():
    files = {p.name: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.json")}
    expected = {name.replace("/", ".") + ".json": schema for name, schema in all_schemas().items()}
    assert files == expected, "run `python -m dataspace.events.schemas` to regenerate the files"


def test_every_contract_rejects_unknown_fields():
    for model in CONTRACTS.values():
        with pytest.raises(ValidationError):
            model.model_validate({"surprise": 1})


def test_signature_round_trip_and_failures():
    keys = KeyRing.generate()
    public = {k.kid: k.public_bytes for k in keys.signing_keys}
    body = b'{"id":"x"}'
    header = sign(keys, body, 1_700_000_000)
    verify_signature(header, body, public, now=1_700_000_010)
    with pytest.raises(InvalidSignature):
        verify_signature(header, body + b" ", public, now=1_700_000_010)  # tampered body
    with pytest.raises(InvalidSignature):
        verify_signature(header, body, public, now=1_700_000_000 + 3600)  # replayed late
    with pytest.raises(InvalidSignature):
        verify_signature(
            header, body, {k.kid: k.public_bytes for k in KeyRing.generate().signing_keys}, now=1_700_000_000
        )
    with pytest.raises(InvalidSignature):
        verify_signature("garbage", body, public)


def test_webhook_urls_must_be_public_https():
    for url in ("http://example.com/hook", "https://127.0.0.1/hook", "https://10.1.2.3/x", "ftp://x", "https:///x"):
        with pytest.raises(InvalidInput):
            check_url(url)
    assert check_url("http://127.0.0.1:9/x", allow_private=True)
