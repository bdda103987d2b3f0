"""The web pages: the landing page (/), customer portal (/portal/), compliance console (/console/), partner
view (/partner/), steward console (/steward/) and their shared assets (/static/). Static files, public on
purpose (they hold no data; every API call they make carries the user's bearer token), served with a strict
Content-Security-Policy (no inline scripts)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response
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


@router.get("/", include_in_schema=False)
def landing() -> Response:
    """The landing page: leads each role to its app (its script and styles live under /static/)."""
    return FileResponse(WEB_ROOT / "static" / "landing.html", media_type="text/html", headers=HEADERS)


for _mount, _directory in (
    ("/static", "static"),
    ("/portal", "portal"),
    ("/console", "console"),
    ("/partner", "partner"),
    ("/steward", "steward"),
):
    router.mount(_mount, PageFiles(directory=WEB_ROOT / _directory, html=True), name=f"pages-{_directory}")
