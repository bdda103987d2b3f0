"""The Dataspace Python SDK: one client per role, over httpx, with typed results.

    from clients.sdk import ClientCredentials, PartnerClient

    with PartnerClient("https://dataspace.example", ClientCredentials("acme", secret)) as partner:
        cost = partner.submission_cost(model_id=7)  # what a job would spend, spending nothing
        print(f"epsilon {cost.epsilon:g} of the {cost.purpose!r} budget, {cost.remaining} left")
        job = partner.submit_job(model_id=7)  # spends it
        print(job.id, partner.job(job.id).status)  # ``wait_for_job(job.id)`` polls until the outcome shows

Methods return the frozen dataclasses of ``clients.sdk.models`` (``Job``, ``Contract``, ``Release``, ...).
Tokens are obtained on first use and refreshed before they expire (or once after a 401); 429 and 503
answers are retried with backoff; errors are raised as typed ``APIError`` subclasses built from the
server's problem+json. The SDK imports nothing of the server: a partner installs it alone.
"""

from clients.sdk import models
from clients.sdk._auth import AuthorizationCode, ClientCredentials, Credentials, StaticToken, Token
from clients.sdk._checkpoints import CheckpointMemory, CheckpointRejected, LogInconsistent
from clients.sdk._exceptions import (
    APIError,
    AuthenticationFailed,
    BudgetExceeded,
    Conflict,
    DataspaceClientError,
    Forbidden,
    InsufficientFunds,
    InvalidInput,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
)
from clients.sdk._export import read_access_export
from clients.sdk._roles import ComplianceClient, CustomerClient, PartnerClient, StewardClient
from clients.sdk.models import UnexpectedResponse

__all__ = [
    "APIError",
    "AuthenticationFailed",
    "AuthorizationCode",
    "BudgetExceeded",
    "CheckpointMemory",
    "CheckpointRejected",
    "ClientCredentials",
    "ComplianceClient",
    "Conflict",
    "Credentials",
    "CustomerClient",
    "DataspaceClientError",
    "Forbidden",
    "InsufficientFunds",
    "InvalidInput",
    "LogInconsistent",
    "NotFound",
    "PartnerClient",
    "RateLimited",
    "ServerError",
    "StaticToken",
    "StewardClient",
    "Token",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "models",
    "read_access_export",
]
