"""A linkage grant is a consent grant whose target is the pseudo-dimension ``linkage`` and whose recipient is
one partner: "link my record with <partner>'s records about me, for <purpose>". It covers no catalog field,
so it never permits a field use by itself."""

from __future__ import annotations

DIMENSION = "linkage"
LABEL = "Linking your record with this partner's own records about you"
