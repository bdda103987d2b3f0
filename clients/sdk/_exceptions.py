"""Errors raised by the SDK.

DataspaceClientError                 anything the SDK raises
├── TransportError                   the server could not be reached (after retries)
├── AuthenticationFailed             the token endpoint refused us (bad client secret, expired code...)
├── UnexpectedResponse               an answer without a field the SDK needs (clients.sdk.models)
├── CheckpointRejected               a checkpoint's signature or witness quorum does not verify
├── LogInconsistent                  the log does not extend the checkpoint remembered earlier
└── APIError                         the server answered with a problem+json (RFC 7807) error
    ├── InvalidInput        400/422
    ├── Unauthorized        401
    ├── Forbidden           403
    ├── NotFound            404
    ├── Conflict            409
    │   ├── InsufficientFunds       code insufficient_funds (not enough points)
    │   └── BudgetExceeded          code privacy_budget_exceeded
    ├── RateLimited         429 (after retries)
    ├── Unavailable         503 (after retries)
    └── ServerError         other 5xx
"""

from __future__ import annotations

from typing import Any

import httpx


class DataspaceClientError(Exception):
    """Base of every SDK error."""


class TransportError(DataspaceClientError):
    pass


class AuthenticationFailed(DataspaceClientError):
    def __init__(self, error: str, description: str = "") -> None:
        self.error = error
        self.description = description
        super().__init__(f"{error}: {description}" if description else error)


class APIError(DataspaceClientError):
    """A problem+json answer; ``code`` is the server's stable error code, ``problem`` the whole body."""

    status: int = 0

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        code: str = "",
        problem: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.problem = problem or {}
        self.request_id = request_id
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Per-field validation errors (``loc``, ``msg``) when the server sent them."""
        errs = self.problem.get("errors")
        return list(errs) if isinstance(errs, list) else []


class InvalidInput(APIError):
    pass


class Unauthorized(APIError):
    pass


class Forbidden(APIError):
    pass


class NotFound(APIError):
    pass


class Conflict(APIError):
    pass


class InsufficientFunds(Conflict):
    pass


class BudgetExceeded(Conflict):
    pass


class RateLimited(APIError):
    pass


class Unavailable(APIError):
    pass


class ServerError(APIError):
    pass


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidInput,
    422: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
    503: Unavailable,
}
_BY_CODE: dict[str, type[APIError]] = {
    "insufficient_funds": InsufficientFunds,
    "privacy_budget_exceeded": BudgetExceeded,
}


def error_from_response(response: httpx.Response) -> APIError:
    """Build the typed error for a non-2xx response, from its problem+json body when there is one."""
    status = response.status_code
    body: dict[str, Any] = {}
    try:
        parsed = response.json()
        if isinstance(parsed, dict):
            body = parsed
    except ValueError:
        pass
    cls = _BY_CODE.get(str(body.get("code"))) or _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    title = str(body.get("title") or response.reason_phrase or "Request failed")
    detail = str(body.get("detail") or body.get("error_description") or body.get("error") or "")
    return cls(
        status,
        title,
        detail,
        code=str(body.get("code") or body.get("error") or ""),
        problem=body,
        request_id=response.headers.get("x-request-id") or body.get("request_id"),
    )
