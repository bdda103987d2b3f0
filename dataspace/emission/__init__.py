"""Desensitized feature emission: what a partner's model may see of the eligible subjects.

Public API: parse a contract's features (``parse_features``), then ``emit`` them as Arrow record batches
with per-partner pseudonyms, generalized values and k-anonymity suppression.

Names are resolved lazily so decryption worker processes, which import ``dataspace.emission._decrypt``,
do not pay for the database layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataspace.emission.service import (
        DecryptPool,
        Emission,
        EmissionStats,
        PseudonymMap,
        emit,
        emit_one,
        quantile_cut_points,
    )
    from dataspace.emission.specs import (
        Bin,
        CatalogField,
        FeatureSpec,
        Group,
        Identity,
        Quantile,
        TopCode,
        check_against_catalog,
        parse_feature,
        parse_features,
    )

_WHERE = {
    "DecryptPool": "service",
    "Emission": "service",
    "EmissionStats": "service",
    "PseudonymMap": "service",
    "emit": "service",
    "emit_one": "service",
    "quantile_cut_points": "service",
    "Bin": "specs",
    "CatalogField": "specs",
    "FeatureSpec": "specs",
    "Group": "specs",
    "Identity": "specs",
    "Quantile": "specs",
    "TopCode": "specs",
    "check_against_catalog": "specs",
    "parse_feature": "specs",
    "parse_features": "specs",
}

__all__ = [
    "Bin",
    "CatalogField",
    "DecryptPool",
    "Emission",
    "EmissionStats",
    "FeatureSpec",
    "Group",
    "Identity",
    "PseudonymMap",
    "Quantile",
    "TopCode",
    "check_against_catalog",
    "emit",
    "emit_one",
    "parse_feature",
    "parse_features",
    "quantile_cut_points",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dataspace.emission' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dataspace.emission.{module}"), name)
