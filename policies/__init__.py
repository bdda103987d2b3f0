"""Authorization model and default policy (Casbin), purpose taxonomy, desensitization definitions."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
MODEL_PATH = HERE / "model.conf"
POLICY_PATH = HERE / "policy.csv"
