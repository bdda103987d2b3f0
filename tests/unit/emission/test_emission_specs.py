"""Parsing contract features and checking them against the catalog."""

from __future__ import annotations

import pytest

from dataspace.emission.specs import (
    Bin,
    CatalogField,
    Group,
    Identity,
    Quantile,
    TopCode,
    check_against_catalog,
    parse_feature,
    parse_features,
)
from dataspace.errors import InvalidInput
from policies.transforms import Coarseness

CATALOG = {
    "age": CatalogField(
        "age",
        "integer",
        {"bin": Coarseness(max_values=8, min_width=10), "quantile": Coarseness(max_values=5)},
        minimum=18,
        maximum=110,
    ),
    "city": CatalogField(
        "city", "category", {"group": Coarseness(max_values=3, min_members=2)}, enum=("BJ", "SH", "HZ", "CD", "XA")
    ),
    "segment": CatalogField(
        "segment", "category", {"group": Coarseness(max_values=2), "identity": Coarseness()}, enum=("a", "b")
    ),
    "income": CatalogField(
        "income",
        "number",
        {"topcode": Coarseness(max_values=9, min_step=1000), "bin": Coarseness(max_values=4)},
        minimum=0,
    ),
    "visits": CatalogField("visits", "integer", {"topcode": Coarseness(max_values=5)}, minimum=0, maximum=1000),
    "old": CatalogField("old", "number", {"bin": Coarseness(max_values=4)}, status="retired"),
}


def test_parses_each_transform() -> None:
    assert parse_feature({"field": "age", "transform": "bin", "edges": [18, 25.5]}) == Bin("age", (18.0, 25.5))
    assert parse_feature({"field": "b", "transform": "quantile", "q": 5}) == Quantile("b", 5)
    assert parse_feature({"field": "i", "transform": "topcode", "upper": 10}) == TopCode("i", 10.0, None)
    group = parse_feature({"field": "c", "transform": "group", "groups": {"t1": ["Beijing"]}, "other": None})
    assert isinstance(group, Group)
    assert group.mapping() == {"Beijing": "t1"}
    assert group.labels() == ["t1"]
    assert parse_feature({"field": "s", "transform": "identity", "name": "seg"}) == Identity("s", "seg")


def test_bin_labels_name_each_interval() -> None:
    assert Bin("age", (18.0, 25.0, 35.5)).labels() == ["<18", "[18,25)", "[25,35.5)", ">=35.5"]


@pytest.mark.parametrize(
    "raw",
    [
        {"transform": "bin", "edges": [1]},
        {"field": "a", "transform": "bin", "edges": []},
        {"field": "a", "transform": "bin", "edges": [3, 2]},
        {"field": "a", "transform": "bin", "edges": [1, float("inf")]},
        {"field": "a", "transform": "bin", "edges": [1, True]},
        {"field": "a", "transform": "quantile", "q": 1},
        {"field": "a", "transform": "quantile", "q": 2.5},
        {"field": "a", "transform": "topcode"},
        {"field": "a", "transform": "topcode", "upper": 1, "lower": 5},
        {"field": "a", "transform": "topcode", "upper": 10, "step": 0},
        {"field": "a", "transform": "group", "groups": {}},
        {"field": "a", "transform": "group", "groups": {"x": ["p"], "y": ["p"]}},
        {"field": "a", "transform": "hash"},
        {"field": "a"},
        "not an object",
    ],
)
def test_rejects_malformed_features(raw: object) -> None:
    with pytest.raises(InvalidInput):
        parse_feature(raw)  # type: ignore[arg-type]


def test_column_names_must_be_unique_and_not_pseudonym() -> None:
    with pytest.raises(InvalidInput):
        parse_features([{"field": "age", "transform": "identity"}] * 2)
    with pytest.raises(InvalidInput):
        parse_features([{"field": "pseudonym", "transform": "identity"}])
    with pytest.raises(InvalidInput):
        parse_features([])
    twice = parse_features(
        [
            {"field": "age", "transform": "bin", "edges": [30]},
            {"field": "age", "transform": "quantile", "q": 4, "name": "age_q"},
        ]
    )
    assert len(twice) == 2


def test_catalog_allows_listed_transforms() -> None:
    check_against_catalog(
        parse_features(
            [
                {"field": "age", "transform": "bin", "edges": [30]},
                {"field": "segment", "transform": "identity"},
                {"field": "income", "transform": "topcode", "upper": 8000, "step": 1000},
            ]
        ),
        CATALOG,
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"field": "city", "transform": "identity"}, "not allowed by the catalog"),
        ({"field": "age", "transform": "identity"}, "not allowed by the catalog"),
        ({"field": "nope", "transform": "identity"}, "no such catalog field"),
        ({"field": "old", "transform": "bin", "edges": [1]}, "retired"),
    ],
)
def test_catalog_refuses(raw: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        check_against_catalog([parse_feature(raw)], CATALOG)


def test_transform_must_fit_the_field_type() -> None:
    catalog = {"city": CatalogField("city", "category", ("bin",)), "n": CatalogField("n", "number", ("group",))}
    with pytest.raises(InvalidInput, match="numeric"):
        check_against_catalog([parse_feature({"field": "city", "transform": "bin", "edges": [1]})], catalog)
    with pytest.raises(InvalidInput, match="categorical"):
        check_against_catalog([parse_feature({"field": "n", "transform": "group", "groups": {"a": ["1"]}})], catalog)


# --- the catalog's promise: no feature finer than the field's declared coarseness -------------------------
def refusal(raw: dict[str, object]) -> list[dict[str, object]]:
    with pytest.raises(InvalidInput) as caught:
        check_against_catalog([parse_feature(raw)], CATALOG)
    errors = caught.value.extra["errors"]
    assert all(e["field"] == raw["field"] and e["transform"] == raw["transform"] for e in errors)
    return errors


def test_topcode_step_10_on_spending_is_refused() -> None:
    # The attack of issue 13: a fine step sends (almost) the exact amount.
    errors = refusal({"field": "income", "transform": "topcode", "lower": 0, "upper": 8000, "step": 10})
    assert {(e["limit"], e["allowed"], e["requested"]) for e in errors} == {
        ("max_values", 9, 801),
        ("min_step", 1000, 10),
    }


@pytest.mark.parametrize(
    ("raw", "limit", "requested"),
    [
        ({"field": "income", "transform": "topcode", "lower": 0, "upper": 1e6, "step": 1000}, "max_values", 1001),
        ({"field": "income", "transform": "topcode", "lower": 0, "upper": 8000}, "min_step", "no step"),
        ({"field": "income", "transform": "topcode", "lower": 0, "step": 1000}, "max_values", "unbounded"),
        ({"field": "visits", "transform": "topcode", "lower": 0, "upper": 5}, "max_values", 6),
        ({"field": "age", "transform": "bin", "edges": [20, 25, 40]}, "min_width", 5.0),
        ({"field": "age", "transform": "bin", "edges": list(range(20, 100, 10))}, "max_values", 9),
        ({"field": "age", "transform": "quantile", "q": 6}, "max_values", 6),
        ({"field": "city", "transform": "group", "groups": {"t1": ["BJ"]}}, "min_members", 1),
        # "other" stands for XA alone
        ({"field": "city", "transform": "group", "groups": {"a": ["BJ", "SH"], "b": ["HZ", "CD"]}}, "min_members", 1),
        ({"field": "segment", "transform": "group", "groups": {"a": ["a"], "b": ["b"]}}, "max_values", 3),
        ({"field": "income", "transform": "bin", "edges": [1, 2, 3, 4]}, "max_values", 5),
    ],
)
def test_finer_than_the_promise_is_refused(raw: dict[str, object], limit: str, requested: object) -> None:
    errors = refusal(raw)
    assert (limit, requested) in {(e["limit"], e["requested"]) for e in errors}


@pytest.mark.parametrize(
    "raw",
    [
        {"field": "income", "transform": "topcode", "lower": 0, "upper": 8000, "step": 1000},  # 9 values
        {"field": "income", "transform": "topcode", "upper": 8999, "step": 1000},  # min 0: still 9 values
        {"field": "visits", "transform": "topcode", "lower": 0, "upper": 4},  # integers 0..4
        {"field": "age", "transform": "bin", "edges": [30, 40, 50, 60, 70, 80, 90]},  # 8 bands, 10 wide
        {"field": "age", "transform": "quantile", "q": 5},
        {"field": "city", "transform": "group", "groups": {"t1": ["BJ", "SH"], "t2": ["HZ", "CD"]}, "other": None},
        {"field": "city", "transform": "group", "groups": {"t1": ["BJ", "SH"]}},  # other: HZ, CD, XA
        {"field": "segment", "transform": "identity"},
    ],
)
def test_exactly_at_the_promise_passes(raw: dict[str, object]) -> None:
    check_against_catalog([parse_feature(raw)], CATALOG)


def test_a_transform_without_declared_limits_is_refused() -> None:
    # A field row that predates promises (a bare list of names) declares no limit: fail closed.
    legacy = {"n": CatalogField("n", "number", ("quantile", "identity"))}
    with pytest.raises(InvalidInput, match="declares no max_values") as caught:
        check_against_catalog([parse_feature({"field": "n", "transform": "quantile", "q": 2})], legacy)
    assert caught.value.extra["errors"][0]["allowed"] is None
    check_against_catalog([parse_feature({"field": "n", "transform": "identity"})], legacy)
