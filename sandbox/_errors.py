"""Errors raised by the sandbox.

    SandboxError                 base of everything below
    ├── SandboxUnavailable       bubblewrap, seccomp support or (server running as root) the sandbox user is
    │                            missing: code-bearing jobs are refused
    ├── ModelRejected(reason)    the uploaded model is malformed, oversized or breaks the input contract
    └── JobFailed(reason)        a job ran and failed: timeout, limit hit, invalid or oversized output

`reason` is a short text from a fixed vocabulary, safe to show to the partner. `detail` may carry text
chosen by the partner's model (an exception message, an offending label): it is for the operator's logs
only, because showing it to the partner would open a channel out of the sandbox.
"""

from __future__ import annotations

__all__ = ["JobFailed", "ModelRejected", "SandboxError", "SandboxUnavailable"]


class SandboxError(Exception):
    """Base class of the sandbox's errors."""

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class SandboxUnavailable(SandboxError):
    """Isolation is not available on this host; nothing was run (there is no unisolated fallback)."""


class ModelRejected(SandboxError):
    """The model cannot be accepted (malformed, too large, or its signature does not match the contract)."""


class JobFailed(SandboxError):
    """The job ran in the sandbox and failed; `reason` says why."""
