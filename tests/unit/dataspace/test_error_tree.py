"""Every public exception the server defines sits in one of the two trees drawn in dataspace/errors.py:
``DataspaceError`` (answers with a code and a status) or ``Fault`` (answers no request)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import dataspace
from dataspace.errors import DataspaceError, Fault

# Control flow inside one module, or another protocol's answer (an OAuth error, the witness's status).
OUTSIDE = {
    "dataspace.auth.server.LoginRequiredError",  # authlib's OAuth2Error, answered in the OAuth error format
    "dataspace.jobs.lease.Abandoned",  # the job engine's own signal that a lease was lost; caught where raised
    "dataspace.witness._state.WitnessRefusal",  # the witness server's tlog-witness protocol answer (its status)
}


def _server_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(dataspace.__path__, "dataspace."):
        if ".migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[f"{obj.__module__}.{name}"] = obj
    return found


def test_every_server_exception_is_in_the_tree() -> None:
    found = _server_exceptions()
    assert "dataspace.vault.DecryptionError" in found
    outside = {n for n, cls in found.items() if not issubclass(cls, DataspaceError | Fault)} - OUTSIDE
    assert not outside, f"add these to a tree in dataspace/errors.py: {sorted(outside)}"


def test_broken_invariants_are_still_assertion_errors() -> None:
    from dataspace.points.invariants import InvariantViolationError
    from dataspace.points.ledger import UnbalancedTransactionError

    assert issubclass(UnbalancedTransactionError, AssertionError)
    assert issubclass(InvariantViolationError, AssertionError)
    assert issubclass(UnbalancedTransactionError, Fault)
