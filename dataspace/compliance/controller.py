"""The controller's identity: who is responsible for the processing, as the operator configured it.

Receipts (ISO/IEC TS 27560 and their Kantara rendering), the public privacy notice and the records of
processing all name the controller from here. ``controller_of(settings)`` validates the configuration
(``DATASPACE_CONTROLLER_*``): a missing value, a malformed one or a placeholder (example domains, reserved
test domains, "Dataspace operator") raises ``ConfigurationError``, so ``create_app`` refuses to start. The
one identity with placeholder domains that is accepted is ``DEMO_CONTROLLER`` as a whole: ``dataspace
demo`` sets it, and every receipt it signs says it is a demonstration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from consent import ReceiptParty
from dataspace.consents.receipts import ReceiptPolicy
from dataspace.errors import ConfigurationError
from dataspace.settings import Settings

ENV_PREFIX = "DATASPACE_CONTROLLER_"
NOTICE_PATH = "/privacy"

_EMAIL = re.compile(r"^[^@\s<>]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_DPO = re.compile(r"^(?:[^<>@]+ <(?P<a>[^<>]+)>|(?P<b>[^<>\s]+))$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]{5,30}$")
_JURISDICTION = re.compile(r"^[A-Z]{2}(?:-[A-Z0-9]{1,3})?$")
_URL = re.compile(r"^https?://[^\s/]+(?:/\S*)?$")
# Domains reserved for documentation and tests (RFC 2606, RFC 6761) and the old built-in controller.
_PLACEHOLDER = re.compile(
    r"(?:^|[.@/\s])example(?:\.[a-z]+)?(?:$|[/\s>:])|\.(?:example|invalid|test|localhost)(?:$|[/\s>:])"
    r"|^dataspace operator$|^the operator$|changeme|change-me|placeholder|\btodo\b|\bxxx\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Controller:
    """The controller as configured; ``notice_url`` is resolved (the server's own notice by default)."""

    name: str
    address: str
    email: str
    phone: str
    dpo: str
    jurisdiction: str
    notice_url: str

    @property
    def party(self) -> ReceiptParty:
        return ReceiptParty(
            name=self.name,
            contact=self.email,
            address=self.address,
            url=self.notice_url,
            phone=self.phone,
            dpo=self.dpo,
        )

    @property
    def is_demo(self) -> bool:
        return _identity(self) == _identity(DEMO_CONTROLLER)


# The demo's identity: visibly not a real controller (reserved ``.invalid`` domains, "demonstration" in
# the name). ``dataspace demo`` sets it unless the operator configured one.
DEMO_CONTROLLER = Controller(
    name="Demo Bank (demonstration data only; not a real controller)",
    address="1 Demo Road, Demo City (fictitious address)",
    email="privacy@demo-bank.invalid",
    phone="+00 000 0000 000",
    dpo="Demo Data Protection Officer <dpo@demo-bank.invalid>",
    jurisdiction="CN",
    notice_url="",
)

DEMO_ENV = {
    f"{ENV_PREFIX}NAME": DEMO_CONTROLLER.name,
    f"{ENV_PREFIX}ADDRESS": DEMO_CONTROLLER.address,
    f"{ENV_PREFIX}EMAIL": DEMO_CONTROLLER.email,
    f"{ENV_PREFIX}PHONE": DEMO_CONTROLLER.phone,
    f"{ENV_PREFIX}DPO": DEMO_CONTROLLER.dpo,
    f"{ENV_PREFIX}JURISDICTION": DEMO_CONTROLLER.jurisdiction,
}


def _identity(c: Controller) -> tuple[str, ...]:
    return (c.name, c.address, c.email, c.phone, c.dpo, c.jurisdiction)


def _problems(c: Controller, *, notice_configured: bool) -> list[str]:
    problems: list[str] = []
    values = {
        "NAME": c.name,
        "ADDRESS": c.address,
        "EMAIL": c.email,
        "PHONE": c.phone,
        "DPO": c.dpo,
        "JURISDICTION": c.jurisdiction,
    }
    for key, value in values.items():
        if not value.strip():
            problems.append(f"{ENV_PREFIX}{key} is not set")
    if c.email and not _EMAIL.match(c.email):
        problems.append(f"{ENV_PREFIX}EMAIL is not an e-mail address")
    dpo = _DPO.match(c.dpo.strip()) if c.dpo else None
    if c.dpo and (dpo is None or not _EMAIL.match(dpo.group("a") or dpo.group("b") or "")):
        problems.append(f"{ENV_PREFIX}DPO must be an e-mail address or 'Name <e-mail>'")
    if c.phone and not _PHONE.match(c.phone):
        problems.append(f"{ENV_PREFIX}PHONE is not a telephone number")
    if c.jurisdiction and not _JURISDICTION.match(c.jurisdiction):
        problems.append(f"{ENV_PREFIX}JURISDICTION must be an ISO 3166 code such as CN or DE")
    if not _URL.match(c.notice_url):
        problems.append(f"{ENV_PREFIX}NOTICE_URL is not an http(s) URL")
    elif notice_configured and not c.notice_url.startswith("https://"):
        problems.append(f"{ENV_PREFIX}NOTICE_URL must be an https:// URL")
    if _identity(c) != _identity(DEMO_CONTROLLER):
        checked = {**values, **({"NOTICE_URL": c.notice_url} if notice_configured else {})}
        for key, value in checked.items():
            if value and _PLACEHOLDER.search(value.strip()):
                problems.append(f"{ENV_PREFIX}{key} is a placeholder")
    return problems


def controller_of(settings: Settings) -> Controller:
    """The configured controller; ``ConfigurationError`` naming every missing or placeholder value."""
    configured = settings.controller_notice_url
    controller = Controller(
        name=settings.controller_name.strip(),
        address=settings.controller_address.strip(),
        email=settings.controller_email.strip(),
        phone=settings.controller_phone.strip(),
        dpo=settings.controller_dpo.strip(),
        jurisdiction=settings.controller_jurisdiction.strip(),
        notice_url=(configured or settings.resolved_issuer + NOTICE_PATH).strip(),
    )
    problems = _problems(controller, notice_configured=bool(configured))
    if problems:
        raise ConfigurationError(
            "the controller's identity is not configured: " + "; ".join(problems) + " (see README, Configuration)"
        )
    return controller


_last: list[tuple[Settings, ReceiptPolicy]] = []  # at most one: the last settings object asked about


def receipt_policy(settings: Settings) -> ReceiptPolicy:
    """What receipts signed under these settings say about the controller (validated; see ``controller_of``).
    Remembered for the last settings object asked about: each consent change asks."""
    for known, policy in list(_last):
        if known is settings:
            return policy
    controller = controller_of(settings)
    policy = ReceiptPolicy(controller=controller.party, jurisdiction=controller.jurisdiction)
    _last[:] = [(settings, policy)]
    return policy
