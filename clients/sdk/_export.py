"""Reading the access export (GET /v1/me/export): JSON Lines with a header line, one line per record tagged
with its section, and a manifest line (counts and SHA-256 per section), checked here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any


def read_access_export(lines: Iterable[bytes | str]) -> dict[str, Any]:
    """Parse and check an export: ``{"header": ..., "sections": {name: [records]}, "manifest": ...}``.

    Raises ``ValueError`` when the manifest is missing (a cut-off download) or a count or digest differs."""
    header: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    sections: dict[str, list[Any]] = {}
    digests: dict[str, Any] = {}
    for raw in lines:
        line = raw.encode() if isinstance(raw, str) else raw
        if not line.strip():
            continue
        if not line.endswith(b"\n"):
            line += b"\n"
        obj = json.loads(line)
        section, record = obj["section"], obj["record"]
        if manifest is not None:
            raise ValueError("a line after the manifest")
        if section == "header":
            header = record
        elif section == "manifest":
            manifest = record
        else:
            sections.setdefault(section, []).append(record)
            digests.setdefault(section, hashlib.sha256()).update(line)
    if header is None or manifest is None:
        raise ValueError("the export is incomplete (no header or no manifest line)")
    for name, count in manifest["counts"].items():
        if len(sections.get(name, [])) != count:
            raise ValueError(f"section {name}: {len(sections.get(name, []))} records, manifest says {count}")
        got = digests[name].hexdigest() if name in digests else hashlib.sha256().hexdigest()
        if got != manifest["sha256"][name]:
            raise ValueError(f"section {name}: SHA-256 differs from the manifest")
    return {"header": header, "sections": sections, "manifest": manifest}
