from __future__ import annotations

from pathlib import Path

import pytest
from joserfc import jwt

from dataspace.auth.tokens import _jwk
from dataspace.context import Context
from dataspace.keys import KeyRing
from dataspace.settings import Settings


@pytest.fixture(scope="module")
def keyed_token(tmp_path_factory: pytest.TempPathFactory) -> tuple[Context, str]:
    """A context without a database (verification does not need one) and a token it signed."""
    ring = KeyRing.generate()
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("auth")))
    ctx = Context(settings=settings, db=None, keys=ring)  # type: ignore[arg-type]
    key = ring.token_key
    token = jwt.encode(
        {"alg": "ES256", "typ": "at+jwt", "kid": key.kid},
        {
            "iss": settings.resolved_issuer,
            "aud": "dataspace",
            "sub": "x",
            "exp": 4102444800,
            "jti": "j",
            "role": "steward",
        },
        _jwk(key, private=True),
    )
    return ctx, token
