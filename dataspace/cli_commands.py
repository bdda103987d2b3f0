"""Imports every module that adds commands to the CLI (one line per module)."""

from clients import cli as _remote_cli  # noqa: F401
from clients import steward_cli as _remote_steward_cli  # noqa: F401
from dataspace.audit import cli as _audit_cli  # noqa: F401
from dataspace.auth import cli as _auth_cli  # noqa: F401
from dataspace.backup import cli as _backup_cli  # noqa: F401
from dataspace.catalog import cli as _catalog_cli  # noqa: F401
from dataspace.consents import cli as _consents_cli  # noqa: F401
from dataspace.demo import cli as _demo_cli  # noqa: F401
from dataspace.ingest import cli as _ingest_cli  # noqa: F401
from dataspace.jobs import cli as _jobs_cli  # noqa: F401
from dataspace.jobs import steward_cli as _steward_cli  # noqa: F401
from dataspace.witness import cli as _witness_cli  # noqa: F401
