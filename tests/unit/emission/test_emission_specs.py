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

CATALOG = {
    "age": CatalogField("age", "integer", ("bin", "quantile")),
    "city": CatalogField("city", "category", ("group",)),
    "segment": CatalogField("segment", "category", ("group", "identity")),
    "income": CatalogField("income", "number", ("topcode", "bin")),
    "old": CatalogField("old", "number", ("bin",), status="retired"),
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
                {"field": "income", "transform": "topcode", "upper": 1e5},
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
