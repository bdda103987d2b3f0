"""The two ways a chunk of decrypted profiles is parsed give the same columns: Arrow's JSON reader (large
chunks) and Python's (a handful of profiles, such as a real-time decision's one)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dataspace.emission import _decrypt

KEYS = ["age", "spend", "city", "member", "born"]
TYPES = ["integer", "number", "category", "boolean", "date"]

_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
_profile = st.dictionaries(st.sampled_from([*KEYS, "other"]), _value, max_size=6)


def _both(profiles: list[dict[str, object]]) -> tuple[list[list[object]], list[list[object]]]:
    plaintexts = [json.dumps(p, separators=(",", ":")).encode() for p in profiles]
    arrow = _decrypt._parse(plaintexts * (_decrypt._SMALL_CHUNK + 1), KEYS, TYPES)  # above the threshold
    small = _decrypt._parse(plaintexts, KEYS, TYPES)
    n = len(plaintexts)
    return [c.to_pylist()[:n] for c in arrow], [c.to_pylist() for c in small]


@settings(max_examples=300, deadline=None)
@given(st.lists(_profile, min_size=1, max_size=_decrypt._SMALL_CHUNK))
def test_small_chunks_parse_as_arrow_does(profiles):
    arrow, small = _both(profiles)
    assert small == arrow


def test_well_typed_profiles_take_both_paths_to_the_same_values():
    profile = {"age": 41, "spend": 12.5, "city": "Lyon", "member": True, "born": "1985-02-03", "other": [1]}
    arrow, small = _both([profile])
    assert small == arrow == [[41.0], [12.5], ["Lyon"], [True], ["1985-02-03"]]


def test_a_value_of_the_wrong_type_is_null_on_both_paths():
    arrow, small = _both([{"age": "forty", "member": 1, "city": 7}])
    assert small == arrow == [[None], [None], ["7"], [None], [None]]
