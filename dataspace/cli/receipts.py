"""``dataspace receipts verify FILE``: check a consent receipt's Ed25519 signature offline."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import typer

from dataspace.cli.common import console, err, one_line_errors
from dataspace.errors import InvalidInput
from dataspace.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Signed consent receipts.")


def public_keys_from_json(doc: Any) -> dict[str, bytes]:
    """Accept the published ``{kid: base64 public key}`` map or a server key file (public halves only)."""
    if isinstance(doc, dict) and "signing_keys" in doc:
        from dataspace.keys import KeyRing

        return {k.kid: k.public_bytes for k in KeyRing.from_json(doc).signing_keys}
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise InvalidInput("the key file must map key ids to base64 Ed25519 public keys")
    try:
        keys = {str(kid): base64.b64decode(value, validate=True) for kid, value in doc.items()}
    except (binascii.Error, ValueError):
        raise InvalidInput("the key file holds a key that is not base64") from None
    if not keys or any(len(k) != 32 for k in keys.values()):
        raise InvalidInput("the key file must hold 32-byte Ed25519 public keys")
    return keys


def load_public_keys(source: str | None) -> dict[str, bytes]:
    """Keys from a URL (``GET /v1/keys/receipts``), a JSON file, or (no source) this server's key file."""
    if source is None:
        path = Settings().resolved_key_file
        if not path.exists():
            raise InvalidInput(f"no --keys given and no key file at {path}")
        return public_keys_from_json(json.loads(path.read_text()))
    if source.startswith(("https://", "http://")):
        import httpx

        try:
            response = httpx.get(source, timeout=10, follow_redirects=False)
            response.raise_for_status()
            return public_keys_from_json(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidInput(f"could not fetch keys from {source}: {type(exc).__name__}") from None
    try:
        return public_keys_from_json(json.loads(Path(source).read_text()))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"could not read keys from {source}: {type(exc).__name__}") from None


@app.command("verify")
@one_line_errors
def verify(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A receipt as GET /v1/me/receipts/{id}."),
    keys: str | None = typer.Option(
        None,
        "--keys",
        "-k",
        help="Public keys: a JSON file or URL of GET /v1/keys/receipts ({kid: base64}), or a server key "
        "file. Default: this server's key file.",
    ),
) -> None:
    """Verify a consent receipt's signature offline. Exit code 0 when valid, 1 otherwise."""
    from consent import InvalidReceipt, verify_receipt

    public = load_public_keys(keys)
    try:
        receipt = verify_receipt(file.read_bytes(), public)
    except InvalidReceipt:
        err.print("[red]invalid:[/red] the receipt does not verify", highlight=False)
        raise typer.Exit(1) from None
    last = receipt.get("events", [{}])[-1]
    console.print(
        f"valid: receipt {receipt.get('receipt_id')} for {receipt.get('record_id')}, "
        f"state {receipt.get('state')} at {last.get('time')}, signed by key {receipt['signature']['kid']}",
        highlight=False,
        soft_wrap=True,
    )
