"""Desensitization transforms a catalog field may allow (the emission code implements them).

- ``identity``: the value as is (only for fields whose catalog entry allows it, e.g. coarse segments).
- ``bin``: generalization into fixed bins (edges).
- ``quantile``: generalization into population quantile bins.
- ``topcode``: top/bottom coding (clamp to bounds).
- ``group``: category grouping (many values to few groups).
"""

from __future__ import annotations

TRANSFORMS: tuple[str, ...] = ("identity", "bin", "quantile", "topcode", "group")
DATA_TYPES: tuple[str, ...] = ("integer", "number", "string", "category", "boolean", "date")
SENSITIVITIES: tuple[str, ...] = ("normal", "sensitive")
