"""The FastAPI <-> authlib adapter: authlib has no FastAPI server integration, so this is it.

The form body is read by an async dependency (``read_form``) so the OAuth routes themselves can be plain
synchronous functions running in the thread pool, like every other route that touches the database.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from authlib.oauth2 import OAuth2Request
from authlib.oauth2.rfc6749 import JsonPayload, JsonRequest, OAuth2Payload
from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from dataspace.auth.server import DataspaceAuthorizationServer

FormData = dict[str, list[str]]

OAUTH_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "max_age",  # OIDC / RFC 9470 step-up: carried through the sign-in form (see auth.server)
    "prompt",
    "ui_locales",  # OIDC: the language of the sign-in page (see http/signin_i18n)
)


async def read_form(request: Request) -> FormData:
    """The url-encoded body as name -> values (empty for other content types)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("application/x-www-form-urlencoded"):
        return {}
    form = await request.form()
    return {key: [str(v) for v in form.getlist(key)] for key in form}


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, datalist: dict[str, list[str]]) -> None:
        self._datalist = defaultdict(list, datalist)
        self._data = {k: v[0] for k, v in datalist.items() if v}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class FastAPIOAuth2Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, request: Request, form: FormData, issuer: str) -> None:
        # authlib refuses non-https URIs; the public URI is the configured issuer (TLS ends at the proxy).
        uri = issuer + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        super().__init__(method=request.method, uri=uri, headers=request.headers)
        self._args = {k: request.query_params.getlist(k) for k in request.query_params}
        self._form = form
        merged: dict[str, list[str]] = {k: list(v) for k, v in self._args.items()}
        for key, values in form.items():
            merged.setdefault(key, []).extend(values)
        self.payload = _Payload(merged)

    @property
    def args(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._args.items() if v}

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._form.items() if v}


class _JsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


class FastAPIAuthorizationServer(DataspaceAuthorizationServer):
    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        raise TypeError("build a FastAPIOAuth2Request first (the body must be read asynchronously)")

    def create_json_request(self, request: Any) -> JsonRequest:
        json_request = JsonRequest(request.method, request.uri, request.headers)
        json_request.payload = _JsonPayload({})
        return json_request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        header_map = dict(headers or [])
        if status in (301, 302, 303) and "Location" in header_map:
            return RedirectResponse(header_map.pop("Location"), status_code=302, headers=header_map)
        header_map.pop("Content-Type", None)
        return JSONResponse(body, status_code=status, headers=header_map)
