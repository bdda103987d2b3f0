"""The DataspaceError tree: every domain failure has a stable ``code`` and an HTTP ``status``.

    DataspaceError
    ├── InvalidInput        422  the request is well-formed but its content is not acceptable
    │   └── RowErrors       422  ingest rows rejected, with row numbers and reasons
    ├── NotFound            404
    ├── Conflict            409  state does not allow the change (duplicate, retired, stale)
    │   └── ConcurrentChange 409  a concurrent change won a race the server may run again (retryable)
    ├── Forbidden           403  authenticated but not allowed (details are logged, not returned)
    ├── Unauthorized        401  no or bad credentials (one uninformative message)
    │   └── StepUpRequired  401  valid token, but the action needs a more recent sign-in (RFC 9470)
    ├── BudgetExceeded      409  differential-privacy budget would be exceeded
    ├── InsufficientFunds   409  points balance or reward stock too low
    ├── Unavailable         503  a required component (e.g. bubblewrap) is missing
    └── ConfigurationError  500  the server is mis-configured (key file missing, ...)

No web framework is imported here; ``dataspace.http.problems`` maps these to RFC 7807 responses.

Failures that answer no request: no code, no status. Callers that expect one catch it by name; one that
escapes a route is a 500 ``internal``, one that escapes a job fails it as ``internal``.

    Fault
    ├── DecryptionError      dataspace.vault: a value does not open (wrong, retired or shredded key; tampered)
    ├── InvalidSignature     dataspace.events.service: a webhook signature does not verify (receivers' helper)
    ├── ShardBusy            dataspace.jobs.lease: another worker holds a live lease on the shard: retry later
    └── BrokenInvariant      also an AssertionError: a programming error the code checks for
        ├── UnbalancedTransactionError  dataspace.points.ledger: postings that do not sum to zero
        ├── InvariantViolationError     dataspace.points.invariants: the ledger is inconsistent
        └── ImmutablePostingError       dataspace.points.models: code edited or deleted a posted row

The offline verifiers raise ``transparency.TransparencyError`` (``ProofError``, ``CheckpointError``): that
package is pure and shared with the SDK, so its errors derive from neither tree; the server catches them
where it verifies (witness submissions, gossip, restores, ``dataspace audit verify``) and answers with its own.
"""

from __future__ import annotations

from typing import Any


class DataspaceError(Exception):
    code = "dataspace_error"
    status = 400
    title = "Request failed"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}

    def diagnostics(self) -> str:
        """A one-line, user-facing description (used by the CLI)."""
        return f"{self.title}: {self.detail}"


class InvalidInput(DataspaceError):
    code = "invalid_input"
    status = 422
    title = "Invalid input"


class RowError:
    __slots__ = ("column", "reason", "row")

    def __init__(self, row: int, column: str | None, reason: str) -> None:
        self.row, self.column, self.reason = row, column, reason

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "reason": self.reason}


class RowErrors(InvalidInput):
    code = "invalid_rows"
    title = "Some rows were rejected"

    def __init__(self, errors: list[RowError], *, accepted: int = 0) -> None:
        super().__init__(
            f"{len(errors)} row error(s); first: row {errors[0].row}: {errors[0].reason}" if errors else "",
            extra={"errors": [e.as_dict() for e in errors[:1000]], "error_count": len(errors), "accepted": accepted},
        )
        self.errors = errors


class NotFound(DataspaceError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(DataspaceError):
    code = "conflict"
    status = 409
    title = "Conflict"


class ConcurrentChange(Conflict):
    """A concurrent change of the same row won a race. Not the request's fault: the server runs the request
    again (``retryable``; see ``dataspace.groupcommit``) and only answers 409 when every attempt lost."""

    code = "concurrent_change"
    title = "Changed concurrently"
    retryable = True


class Forbidden(DataspaceError):
    code = "forbidden"
    status = 403
    title = "Forbidden"

    def __init__(self, detail: str = "You are not allowed to do this.", **kw: Any) -> None:
        super().__init__(detail, **kw)


class Unauthorized(DataspaceError):
    code = "unauthorized"
    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str = "Missing or invalid credentials.", **kw: Any) -> None:
        super().__init__(detail, **kw)


class StepUpRequired(Unauthorized):
    """The token is fine but the person signed in too long ago for this action: sign in again, then retry."""

    code = "insufficient_user_authentication"
    title = "Recent sign-in required"

    def __init__(self, max_age: int) -> None:
        super().__init__(
            f"This action needs a sign-in from the last {max_age} seconds: sign in again and retry.",
            extra={"max_age": max_age},
        )
        self.max_age = max_age


class BudgetExceeded(DataspaceError):
    code = "privacy_budget_exceeded"
    status = 409
    title = "Privacy budget exceeded"


class InsufficientFunds(DataspaceError):
    code = "insufficient_funds"
    status = 409
    title = "Insufficient balance or stock"


class Unavailable(DataspaceError):
    code = "unavailable"
    status = 503
    title = "Service unavailable"


class ConfigurationError(DataspaceError):
    code = "configuration_error"
    status = 500
    title = "Server configuration error"


class Fault(Exception):
    """Base of the failures that answer no request (see the module's second tree): never a problem+json by type."""


class BrokenInvariant(Fault, AssertionError):
    """A programming error the code checks for (an AssertionError, so it reads as a failed assertion too)."""
