"""The web pages: customer portal (/portal/), compliance console (/console/), partner view (/partner/) and
their shared assets (/static/). Static files, public on purpose (they hold no data; every API call they
make carries the user's bearer token), served with a strict Content-Security-Policy (no inline scripts)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_ROOT = Path(__file__).resolve().parents[3] / "clients" / "web"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class PageFiles(StaticFiles):
    """StaticFiles with the pages' security headers on every response."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


router = APIRouter()
for _mount, _directory in (
    ("/static", "static"),
    ("/portal", "portal"),
    ("/console", "console"),
    ("/partner", "partner"),
):
    router.mount(_mount, PageFiles(directory=WEB_ROOT / _directory, html=True), name=f"pages-{_directory}")
