"""Bearer-token authentication and policy enforcement (replaced by the OAuth/Casbin implementation)."""

from __future__ import annotations

from fastapi import Request

from dataspace.auth.principal import Principal
from dataspace.context import Context
from dataspace.errors import Unauthorized


def authorize_request(request: Request, ctx: Context, obj: str, act: str) -> Principal:
    # Default deny until the authorization server is wired in.
    raise Unauthorized()
