"""Every router, assembled in one list; ``create_app`` includes them in this order."""

from fastapi import APIRouter

from dataspace.http.routes import health

ROUTERS: list[APIRouter] = [health.router]
