"""The human-readable specification of one event contract version, in Markdown or HTML, English or Chinese:
the document both companies sign off on. Rendered from Jinja2 templates (``templates/``); HTML autoescaped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.errors import InvalidInput
from dataspace.events.contract_models import EventContract
from dataspace.events.contracts import _walk, parties, pending_sides
from dataspace.partners.models import Partner

FORMATS = {"md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8"}
LANGUAGES = ("en", "zh")

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "spec": "Event contract specification",
        "type": "Event type",
        "version": "Version",
        "status": "Status",
        "change": "Change from the previous version",
        "producer": "Producer",
        "consumers": "Consumers",
        "purpose": "Purpose (customer consent)",
        "latency": "Delivery latency requirement",
        "retry": "Retry policy",
        "retry_text": "first retry after {backoff} s, each next one x{mult}, at most {max_backoff} s apart; "
        "{attempts} attempts, then {dead}",
        "dead_letter": "dead-lettered (replayable by the operator)",
        "dropped": "dropped",
        "fields": "Fields",
        "field": "Field",
        "field_type": "Type",
        "required": "Required",
        "unit": "Unit",
        "catalog": "Catalog field (customer data)",
        "meaning": "Meaning",
        "yes": "yes",
        "no": "no",
        "approvals": "Approvals",
        "pending": "Awaiting approval from",
        "operator": "the operator",
        "changes": "Changes",
        "guarantees": "Delivery guarantees",
        "guarantees_text": "At least once to each consumer; deduplicate by the event id, which never changes across "
        "retries. Each request is signed with Ed25519 over '<timestamp>.<body>' (header Dataspace-Signature). "
        "Customer-data fields reach a consumer only within that customer's consent for that field, purpose "
        "and consumer, under the consumer's pseudonym ('subject'); otherwise they are left out.",
        "schema": "JSON Schema of the event data",
        "none": "none",
        "decision_ref": "(The operator's link to the real-time decision this event answers: kept by the operator, "
        "never delivered to consumers.)",
    },
    "zh": {
        "spec": "事件契约规范",
        "type": "事件类型",
        "version": "版本",
        "status": "状态",
        "change": "相对上一版本的变更级别",
        "producer": "生产方",
        "consumers": "消费方",
        "purpose": "用途（客户授权）",
        "latency": "投递时延要求",
        "retry": "重试策略",
        "retry_text": "首次重试间隔 {backoff} 秒，之后每次乘以 {mult}，最长间隔 {max_backoff} 秒；"
        "共 {attempts} 次，之后{dead}",
        "dead_letter": "进入死信队列（运营方可重放）",
        "dropped": "丢弃",
        "fields": "字段",
        "field": "字段",
        "field_type": "类型",
        "required": "必填",
        "unit": "单位",
        "catalog": "数据目录字段（客户数据）",
        "meaning": "含义",
        "yes": "是",
        "no": "否",
        "approvals": "审批",
        "pending": "等待审批方",
        "operator": "运营方",
        "changes": "变更明细",
        "guarantees": "投递保证",
        "guarantees_text": "对每个消费方至少投递一次；请按事件 id 去重（重试时 id 不变）。每个请求以 Ed25519 对"
        "“<时间戳>.<正文>”签名（请求头 Dataspace-Signature）。客户数据字段仅在该客户对该字段、该用途和该消费方"
        "的授权范围内，以该消费方的假名（subject）送达；否则不予发送。",
        "schema": "事件数据的 JSON Schema",
        "none": "无",
        "decision_ref": "（运营方对本事件所回应的实时决策的关联：由运营方保留，从不投递给消费方。）",
    },
}

_env = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def _md(value: Any) -> str:
    """A table cell: no pipes or newlines can break the Markdown table."""
    return str(value).replace("|", "\\|").replace("\n", " ")


_env.filters["md"] = _md


def render(session: Session, contract: EventContract, *, fmt: str, lang: str) -> str:
    if fmt not in FORMATS or lang not in LANGUAGES:
        raise InvalidInput(f"format is one of {sorted(FORMATS)}, lang one of {list(LANGUAGES)}")
    t = LABELS[lang]
    names = dict(session.execute(select(Partner.id, Partner.name).where(Partner.id.in_(parties(contract)))).all())
    fields = [
        {
            "path": path,
            "type": prop.get("type", "any") if not isinstance(prop.get("type"), list) else " | ".join(prop["type"]),
            "required": t["yes"] if required else t["no"],
            "unit": prop.get("x-unit", ""),
            "catalog": prop.get("x-catalog-field", ""),
            "meaning": prop.get("description", "") + (" " + t["decision_ref"] if prop.get("x-decision-ref") else ""),
        }
        for path, prop, required in _walk(contract.schema, "")
    ]
    retry = contract.retry
    context = {
        "t": t,
        "lang": lang,
        "c": contract,
        "producer": t["operator"] if contract.producer_partner_id is None else names[contract.producer_partner_id],
        "consumers": [names[p] for p in contract.consumer_partner_ids],
        "fields": fields,
        "retry_text": t["retry_text"].format(
            backoff=retry["backoff_seconds"],
            mult=retry["multiplier"],
            max_backoff=retry["max_backoff_seconds"],
            attempts=retry["max_attempts"],
            dead=t["dead_letter"] if retry.get("dead_letter", True) else t["dropped"],
        ),
        "approvals": sorted(contract.approvals.items()),
        "pending": pending_sides(contract),
        "schema_json": json.dumps(contract.schema, indent=2, ensure_ascii=False, sort_keys=True),
    }
    return _env.get_template(f"spec.{fmt}.j2").render(**context)


def filename(contract: EventContract, *, fmt: str, lang: str) -> str:
    return f"{contract.event_type}-{contract.version}.{lang}.{fmt}"
