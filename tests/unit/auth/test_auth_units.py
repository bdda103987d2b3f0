"""Pure units of the auth package: scopes, passwords, the policy model, token tampering."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.auth.passwords import hash_password, verify_password
from dataspace.auth.policy import build_enforcer, default_rules
from dataspace.auth.scopes import (
    OBJECT_SCOPES,
    ROLE_SCOPES,
    SCOPES,
    STEP_UP_SCOPES,
    needs_recent_sign_in,
    required_scope,
    scopes_for,
)


def test_required_scope_is_exact_and_fails_closed() -> None:
    assert required_scope("catalog", "read") == "catalog"
    assert required_scope("me.consents", "write") == "consents"
    assert required_scope("partner.jobs", "read") == "partner"
    assert required_scope("partners", "write") == "admin"
    assert required_scope("audit.checkpoint", "read") == "audit"
    assert required_scope("me.erasure", "write") == "erase"
    assert required_scope("me.redemptions", "write") == "redeem"
    assert required_scope("admin.policies", "read") == "admin"
    assert required_scope("admin.policies", "write") == "policy"
    # Unknown objects (and known objects with another action) have no scope: the caller denies them.
    assert required_scope("me.consents.history", "read") is None
    assert required_scope("catalogue", "read") is None
    assert required_scope("me.export", "write") is None
    assert required_scope("anything", "read") is None


def test_every_scope_is_used_and_step_up_scopes_are_the_irreversible_ones() -> None:
    assert set(OBJECT_SCOPES.values()) == set(SCOPES)
    assert {s for r in ROLE_SCOPES.values() for s in r} == set(SCOPES)
    assert {"erase", "redeem", "policy"} == STEP_UP_SCOPES
    assert needs_recent_sign_in("me.erasure", "write")
    assert needs_recent_sign_in("me.redemptions", "write")
    assert needs_recent_sign_in("admin.policies", "write")
    assert not needs_recent_sign_in("admin.policies", "read")
    assert not needs_recent_sign_in("me.points", "read")
    assert not needs_recent_sign_in("nothing", "write")


def test_token_scopes_are_an_intersection() -> None:
    assert scopes_for("partner") == sorted(ROLE_SCOPES["partner"])
    assert scopes_for("partner", "partner admin") == ["partner"]  # admin is not a partner scope
    assert scopes_for("steward", "admin", ["catalog"]) == []
    assert scopes_for("nobody") == []
    assert scopes_for("customer", "catalog") == ["catalog"]
    assert scopes_for("customer", "admin") == []  # narrowed to nothing


def test_step_up_scopes_only_by_name_and_only_for_a_person() -> None:
    assert scopes_for("customer") == ["catalog", "consents", "points", "usage"]
    assert scopes_for("customer", "   ") == ["catalog", "consents", "points", "usage"]
    assert scopes_for("customer", "consents erase redeem") == ["consents", "erase", "redeem"]
    assert scopes_for("steward", "admin policy") == ["admin", "policy"]
    assert scopes_for("steward", "admin policy", person=False) == ["admin"]
    assert scopes_for("customer", "erase", ["catalog", "erase"], person=False) == []


def test_password_hash_round_trip_and_unknown_user() -> None:
    hashed = hash_password("a long enough password")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "a long enough password")
    assert not verify_password(hashed, "a long enough passworD")
    assert not verify_password(None, "anything")  # unknown user: same work, always False
    assert not verify_password("not-a-hash", "x")


def test_default_policy_denies_by_default() -> None:
    enforcer = build_enforcer(default_rules())
    assert enforcer.enforce("customer", "catalog", "read")
    assert not enforcer.enforce("customer", "catalog", "write")
    assert not enforcer.enforce("customer", "admin.policies", "read")
    assert not enforcer.enforce("nobody", "catalog", "read")
    assert not enforcer.enforce("steward", "something.new", "read")


def test_wildcard_rules_match_sub_objects() -> None:
    enforcer = build_enforcer([("p", "partner", "partner.*", "read")])
    assert enforcer.enforce("partner", "partner.jobs", "read")
    assert not enforcer.enforce("partner", "partners", "read")


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_tampered_tokens_never_verify(keyed_token: tuple[object, str], position: int, flip: int) -> None:
    from dataspace.auth.tokens import verify_access_token
    from dataspace.errors import Unauthorized

    ctx, token = keyed_token
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[position % len(raw)] ^= flip
    forged = f"{header}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}.{signature}"
    try:
        verify_access_token(ctx.settings, ctx.keys, forged)  # type: ignore[attr-defined]
    except Unauthorized:
        return
    raise AssertionError("a tampered token verified")


def test_untampered_token_verifies(keyed_token: tuple[object, str]) -> None:
    from dataspace.auth.tokens import verify_access_token

    ctx, token = keyed_token
    assert verify_access_token(ctx.settings, ctx.keys, token).claims["role"] == "steward"  # type: ignore[attr-defined]


def test_a_remembered_token_still_has_its_claims_checked(keyed_token: tuple[object, str]) -> None:
    from dataspace.auth.tokens import verify_access_token, verify_remembered
    from dataspace.errors import Unauthorized

    ctx, token = keyed_token
    verify_access_token(ctx.settings, ctx.keys, token)  # type: ignore[attr-defined]
    assert verify_remembered(ctx.settings, ctx.keys, token) is not None  # type: ignore[attr-defined]
    try:
        verify_access_token(ctx.settings, ctx.keys, token, now=4102444800 + 1)  # type: ignore[attr-defined]  (after its exp)
    except Unauthorized:
        pass
    else:
        raise AssertionError("an expired token verified from the memo")


def test_a_remembered_token_is_refused_once_its_key_leaves_the_ring(keyed_token: tuple[object, str]) -> None:
    from dataspace.auth.tokens import verify_access_token, verify_remembered
    from dataspace.errors import Unauthorized
    from dataspace.keys import KeyRing

    ctx, token = keyed_token
    settings, keys = ctx.settings, ctx.keys  # type: ignore[attr-defined]
    assert verify_access_token(settings, keys, token).claims["role"] == "steward"
    other = KeyRing.generate()
    assert verify_remembered(settings, other, token) is None
    try:
        verify_access_token(settings, other, token)
    except Unauthorized:
        pass
    else:
        raise AssertionError("a token verified with a key that is not in the ring")
    issuer_moved = settings.model_copy(update={"issuer": "https://elsewhere.example"})
    assert verify_remembered(issuer_moved, keys, token) is None


def test_an_unseen_token_is_not_remembered() -> None:
    from dataspace.auth.tokens import VerifiedTokens

    memo = VerifiedTokens(max_size=2)
    assert memo.get(b"a") is None
    for digest in (b"a", b"b", b"c"):
        memo.put(digest, None, {})  # type: ignore[arg-type]
    assert memo.get(b"a") is None  # bounded: the oldest went first
    assert memo.get(b"c") is not None
