"""The HTTP layer: the only code that imports FastAPI/Starlette. Thin: parse, authorize, call a service."""
