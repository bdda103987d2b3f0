"""WCAG 2.1 A/AA checks with axe-core (vendored from its npm package: tests/e2e/vendor/axe.min.js, MPL-2.0),
run inside the page under test. ``page.evaluate`` runs through the DevTools protocol, so the pages' strict CSP
(script-src 'self') stays on while axe runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

AXE = Path(__file__).with_name("vendor") / "axe.min.js"
RUN = """async () => {
  const tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
  const result = await axe.run(document, { runOnly: { type: "tag", values: tags } });
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(", ")}`);
}"""


def serious_violations(page: Any) -> list[str]:
    """The serious and critical WCAG 2.1 AA violations axe-core finds in the page as it is now."""
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")
    return list(page.evaluate(RUN))
