"""The Dataspace Python SDK: one client per role, over httpx.

    from clients.sdk import ClientCredentials, PartnerClient

    with PartnerClient("https://dataspace.example", ClientCredentials("acme", secret)) as partner:
        job = partner.submit_job(contract_id=3, model_id=7)
        partner.wait_for_job(job["id"])

Tokens are obtained on first use and refreshed before they expire (or once after a 401); 429 and 503
answers are retried with backoff; errors are raised as typed ``APIError`` subclasses built from the
server's problem+json.
"""

from clients.sdk._auth import AuthorizationCode, ClientCredentials, Credentials, StaticToken, Token, pkce_pair
from clients.sdk._base import BaseClient
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
    error_from_response,
)
from clients.sdk._export import read_access_export
from clients.sdk._roles import ComplianceClient, CustomerClient, PartnerClient, StewardClient

__all__ = [
    "APIError",
    "AuthenticationFailed",
    "AuthorizationCode",
    "BaseClient",
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
    "error_from_response",
    "pkce_pair",
    "read_access_export",
]
