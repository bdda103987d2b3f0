"""The catalog's promise in plain words: how a field may leave, generated from the same declaration
(``Field.transforms``) that contract checks and the emission enforce, in every language the manual has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from policies.transforms import NUMERIC_TYPES, Coarseness

LANGUAGES = ("en", "zh-CN")
# Coarsest first: the order the alternatives are listed in.
_ORDER = ("quantile", "bin", "group", "topcode", "identity")


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.6g}"


def _en(name: str, c: Coarseness, data_type: str, domain: int | None) -> str:
    if name == "quantile":
        return f"one of at most {c.max_values} bands with about as many customers in each"
    if name == "bin":
        width = f", each at least {_num(c.min_width)} wide" if c.min_width else ""
        return f"one of at most {c.max_values} fixed bands{width}"
    if name == "topcode":
        step = f"rounded down to steps of at least {_num(c.min_step)} and " if c.min_step else ""
        return f"a value {step}capped, one of at most {c.max_values} possible values"
    if name == "group":
        members = f", each covering at least {c.min_members} possible values" if c.min_members else ""
        return f"one of at most {c.max_values} groups{members}"
    if data_type == "boolean":
        return "yes or no"
    if data_type in NUMERIC_TYPES:
        return "the exact value"
    return f"the value as it is (one of {domain} possible values)" if domain else "the value as it is"


def _zh(name: str, c: Coarseness, data_type: str, domain: int | None) -> str:
    if name == "quantile":
        return f"最多 {c.max_values} 个人数大致相等的区间之一"
    if name == "bin":
        width = f"，每个区间宽度至少 {_num(c.min_width)}" if c.min_width else ""
        return f"最多 {c.max_values} 个固定区间之一{width}"
    if name == "topcode":
        step = f"按至少 {_num(c.min_step)} 的步长向下取整、" if c.min_step else ""
        return f"截顶后{step}最多 {c.max_values} 种取值的数值"
    if name == "group":
        members = f"，每组至少涵盖 {c.min_members} 种可能取值" if c.min_members else ""
        return f"最多 {c.max_values} 个分组之一{members}"
    if data_type == "boolean":
        return "是或否"
    if data_type in NUMERIC_TYPES:
        return "确切数值"
    return f"原值（{domain} 种可能取值之一）" if domain else "原值"


_Phrase = Callable[[str, Coarseness, str, int | None], str]
# phrase, "only as {}", joiner, end when the value itself may leave, end otherwise, "not shared".
_SENTENCES: dict[str, tuple[_Phrase, str, str, str, str, str]] = {
    "en": (
        _en,
        "Shared with partners only as {}",
        "; or ",
        ".",
        "; never as the exact value.",
        "Not shared with partners.",
    ),
    "zh-CN": (_zh, "仅以下列形式与合作伙伴共享：{}", "；或", "。", "；绝不共享确切数值。", "不与合作伙伴共享。"),
}


def declared(transforms: Mapping[str, Any] | list[str] | None) -> dict[str, dict[str, Any]]:
    """A field's stored transforms as ``{name: limits}``; a bare list of names (rows written before
    promises existed) declares no limits, so every transform in it but ``identity`` is refused."""
    if isinstance(transforms, Mapping):
        return {str(k): dict(v or {}) for k, v in transforms.items()}
    return {str(name): {} for name in transforms or ()}


def shared_as(
    data_type: str, constraints: Mapping[str, Any], transforms: Mapping[str, Any] | list[str]
) -> dict[str, str]:
    """``{language: sentence}`` saying how the field may leave, e.g. "Shared with partners only as one of at
    most 4 bands with about as many customers in each; never as the exact value."."""
    promise = declared(transforms)
    names = [n for n in _ORDER if n in promise]
    enum = constraints.get("enum")
    domain = len(enum) if isinstance(enum, list) else None
    out = {}
    for lang, (phrase, only, joiner, end_raw, end, none) in _SENTENCES.items():
        if not names:
            out[lang] = none
            continue
        parts = [phrase(n, Coarseness.from_json(promise[n]), data_type, domain) for n in names]
        out[lang] = only.format(joiner.join(parts)) + (end_raw if "identity" in names else end)
    return out
