"""Every text of the demo catalog that a customer or a compliance officer reads has a Chinese version."""

from __future__ import annotations

import re

from dataspace.catalog import service as catalog
from dataspace.demo.build import CATALOG
from dataspace.demo.scenario import REWARDS

HAN = re.compile(r"[\u4e00-\u9fff]")
FIELD_TEXTS = ("label", "description", "collection_purpose", "storage_location", "sharing_scope")


def _chinese(i18n: dict[str, dict[str, str]], names: tuple[str, ...], what: str) -> None:
    zh = i18n.get("zh-CN", {})
    for name in names:
        assert HAN.search(zh.get(name, "")), f"{what}: no Chinese {name}"


def test_every_demo_catalog_text_has_chinese() -> None:
    doc = catalog.read_document(CATALOG)
    for dim in doc.dimensions:
        _chinese(dim.i18n, ("label", "description"), f"dimension {dim.key}")
    for purpose in doc.purposes:
        _chinese(purpose.i18n, ("label", "description"), f"purpose {purpose.key}")
    for field in doc.fields:
        _chinese(field.i18n, FIELD_TEXTS, f"field {field.key}")
    assert doc.partners
    for partner in doc.partners:
        _chinese(partner.i18n or {}, ("name", "description"), f"partner {partner.key}")


def test_every_demo_reward_has_a_chinese_name() -> None:
    for key, _name, _cost, _stock, zh in REWARDS:
        assert HAN.search(zh), key
