"""Every table, imported in one place so metadata (and Alembic) sees the whole schema."""

from dataspace.agreements.models import Contract, ContractApproval, PartnerModel, PrivacyBudget
from dataspace.auth.models import AuthorizationCode, IssuedToken, LoginAttempt, OAuthClient, PolicyRule, User
from dataspace.catalog.models import Dimension, Field, FieldVersion, Purpose
from dataspace.compliance.models import SubjectRequest
from dataspace.db import Base
from dataspace.events.contract_models import BusinessEvent, CollaborationRelease, EventContract, EventDelivery
from dataspace.events.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from dataspace.grants.models import ConsentEvent, ConsentGrant, ConsentReceipt
from dataspace.jobs.models import Decision, Job, Release
from dataspace.linkage.models import Contribution, Declaration, Link
from dataspace.partners.models import Partner
from dataspace.points.models import (
    PointsAccount,
    PointsLot,
    PointsPosting,
    PointsTransaction,
    Redemption,
    Reward,
)
from dataspace.realtime.models import RealtimeDecision
from dataspace.subjects.models import KeyEpoch, Subject, SubjectKey, SubjectProfile
from dataspace.tlog.models import TLogCheckpoint, TLogEntry, TLogHead, TLogNode

__all__ = [
    "AuthorizationCode",
    "Base",
    "BusinessEvent",
    "CollaborationRelease",
    "ConsentEvent",
    "ConsentGrant",
    "ConsentReceipt",
    "Contract",
    "ContractApproval",
    "Contribution",
    "Decision",
    "Declaration",
    "Dimension",
    "EventContract",
    "EventDelivery",
    "Field",
    "FieldVersion",
    "IssuedToken",
    "Job",
    "KeyEpoch",
    "Link",
    "LoginAttempt",
    "OAuthClient",
    "OutboxEvent",
    "Partner",
    "PartnerModel",
    "PointsAccount",
    "PointsLot",
    "PointsPosting",
    "PointsTransaction",
    "PolicyRule",
    "PrivacyBudget",
    "Purpose",
    "RealtimeDecision",
    "Redemption",
    "Release",
    "Reward",
    "Subject",
    "SubjectKey",
    "SubjectProfile",
    "SubjectRequest",
    "TLogCheckpoint",
    "TLogEntry",
    "TLogHead",
    "TLogNode",
    "User",
    "WebhookDelivery",
    "WebhookSubscription",
]
