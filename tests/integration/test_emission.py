"""Feature emission from sealed profiles, on SQLite and PostgreSQL (real vault, real database)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import select, update

from dataspace.catalog.models import Dimension, Field
from dataspace.context import Context
from dataspace.emission import DecryptPool, emit, emit_one, parse_features, quantile_cut_points
from dataspace.emission.service import catalog_fields
from dataspace.errors import InvalidInput
from dataspace.subjects.models import Subject, SubjectProfile
from dataspace.subjects.store import shred, store_profiles

CITIES = ["Beijing", "Shanghai", "Hangzhou", "Chengdu"]
FEATURES = [
    {"field": "age", "transform": "bin", "edges": [30, 50]},
    {"field": "balance", "transform": "quantile", "q": 2},
    {"field": "income", "transform": "topcode", "upper": 80000, "lower": 20000, "step": 30000},
    {"field": "city", "transform": "group", "groups": {"tier1": ["Beijing", "Shanghai"]}, "other": "other"},
    {"field": "segment", "transform": "identity"},
]


def add_catalog(ctx: Context) -> None:
    # Each field's promise: the transforms it may leave under and their minimum coarseness.
    fields = {
        "age": ("integer", {"bin": {"max_values": 4}, "quantile": {"max_values": 6}}),
        "balance": ("number", {"quantile": {"max_values": 4}}),
        "income": ("number", {"topcode": {"max_values": 3, "min_step": 30000}}),
        "city": ("category", {"group": {"max_values": 2}}),
        "segment": ("category", {"identity": {}, "group": {"max_values": 2}}),
        "national_id": ("string", {"group": {"max_values": 2}}),
    }
    with ctx.db.transaction() as s:
        s.add(Dimension(key="assets", label="Assets"))
        s.flush()
        for key, (data_type, transforms) in fields.items():
            s.add(
                Field(
                    key=key,
                    dimension_key="assets",
                    label=key,
                    description=key,
                    collection_purpose="test",
                    storage_location="vault",
                    sharing_scope="none",
                    retention_days=30,
                    sensitivity="normal",
                    data_type=data_type,
                    transforms=transforms,
                )
            )


def profile(i: int) -> dict[str, object]:
    return {
        "age": 20 + (i % 3) * 15,
        "balance": 1000.0 + i,
        "income": 15000.0 + (i % 4) * 25000 + 0.5,
        "city": CITIES[i % 4],
        "segment": "mass" if i % 2 else "affluent",
        "national_id": f"ID-{i:08d}",
    }


def add_subjects(ctx: Context, n: int) -> dict[str, int]:
    """``{external ref: subject id}`` for ``n`` subjects stored through the shared profile store."""
    with ctx.db.transaction() as s:
        store_profiles(s, ctx.vault, [(f"cust-{i}", profile(i)) for i in range(n)], ctx.keys.blind_index)
    with ctx.db.session() as s:
        by_blind = dict(s.execute(select(Subject.blind_ref, Subject.id)).all())
    return {f"cust-{i}": by_blind[ctx.keys.blind_index(f"cust-{i}")] for i in range(n)}


def run(ctx: Context, ids: object, *, partner: str = "insurer", k: int = 2, features: list | None = None, **kw: object):
    with ctx.db.session() as s:
        return emit(
            s,
            ctx.vault,
            ctx.keys,
            partner_key=partner,
            features=parse_features(features or FEATURES),
            k=k,
            eligible_subject_ids=ids,
            **kw,
        )


def table_of(emission) -> pa.Table:
    return emission.to_table()


def ipc_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


@pytest.fixture
def population(ctx: Context) -> dict[str, int]:
    add_catalog(ctx)
    return add_subjects(ctx, 48)


def test_emits_generalized_features_under_pseudonyms(ctx: Context, population: dict[str, int]) -> None:
    ids = np.array(sorted(population.values()))
    emission = run(ctx, ids, batch_size=10)
    table = table_of(emission)
    assert table.column_names == ["pseudonym", "age", "balance", "income", "city", "segment"]
    assert [b.num_rows for b in emission.batches()] == [10, 10, 10, 10, 8]
    assert emission.stats.as_dict() == {
        "eligible": 48,
        "loaded": 48,
        "unreadable": 0,
        "emitted": 48,
        "suppressed_rows": 0,
        "suppressed_cells": 0,
    }
    assert table.schema.field("age").type == pa.float64()
    assert table.schema.field("city").type == pa.string()
    assert table.schema.field("age").metadata[b"labels"] == b'["<30", "[30,50)", ">=50"]'
    # Decode each row back through the server-side map and compare with the transform applied by hand.
    subject_of = dict(
        zip(
            emission.pseudonym_to_subject.pseudonyms.astype(str),
            emission.pseudonym_to_subject.subject_ids.tolist(),
            strict=True,
        )
    )
    index_of = {sid: int(ref.split("-")[1]) for ref, sid in population.items()}
    for row in table.to_pylist():
        i = index_of[subject_of[row["pseudonym"]]]
        assert row["age"] == {20: 0, 35: 1, 50: 2}[20 + (i % 3) * 15]
        assert row["balance"] == (0.0 if i < 24 else 1.0)  # two quantile bins over the 48 balances
        assert row["income"] == {0: 20000.0, 1: 20000.0, 2: 50000.0, 3: 80000.0}[i % 4]
        assert row["city"] == ("tier1" if i % 4 < 2 else "other")
        assert row["segment"] == ("mass" if i % 2 else "affluent")
    # Rows leave in pseudonym order, not subject order.
    assert table.column("pseudonym").to_pylist() == sorted(subject_of)


def test_no_raw_identifier_or_raw_value_leaves(ctx: Context, population: dict[str, int]) -> None:
    emission = run(ctx, list(population.values()))
    table = table_of(emission)
    assert table.column_names == ["pseudonym", "age", "balance", "income", "city", "segment"]
    assert not any(pa.types.is_integer(f.type) for f in table.schema)  # no subject id column sneaks in
    blob = ipc_bytes(table)
    for ref in population:
        i = int(ref.split("-")[1])
        assert ref.encode() not in blob
        assert ctx.keys.blind_index(ref).encode() not in blob
        assert f"ID-{i:08d}".encode() not in blob
        # raw numbers of generalized fields (as float64 bytes) never appear
        for raw in (1000.0 + i, 15000.0 + (i % 4) * 25000 + 0.5):
            assert np.float64(raw).tobytes() not in blob
    for city in ("Hangzhou", "Chengdu", "Beijing", "Shanghai"):
        assert city.encode() not in blob


def test_pseudonyms_are_per_partner_and_stable(ctx: Context, population: dict[str, int]) -> None:
    ids = list(population.values())
    a1, a2 = run(ctx, ids, partner="insurer"), run(ctx, ids, partner="insurer")
    b = run(ctx, ids, partner="charging-network")
    scoped = run(ctx, ids, partner="insurer", pseudonym_scope="job-2")
    p_a1 = set(table_of(a1).column("pseudonym").to_pylist())
    assert p_a1 == set(table_of(a2).column("pseudonym").to_pylist())
    assert not p_a1 & set(table_of(b).column("pseudonym").to_pylist())
    assert not p_a1 & set(table_of(scoped).column("pseudonym").to_pylist())
    assert all(len(p) == 32 and int(p, 16) >= 0 for p in p_a1)
    # The same subject maps back from each partner's own pseudonym.
    some = ids[5]
    pa_of = {
        s: p
        for p, s in zip(
            a1.pseudonym_to_subject.pseudonyms.astype(str), a1.pseudonym_to_subject.subject_ids.tolist(), strict=True
        )
    }
    pb_of = {
        s: p
        for p, s in zip(
            b.pseudonym_to_subject.pseudonyms.astype(str), b.pseudonym_to_subject.subject_ids.tolist(), strict=True
        )
    }
    assert pa_of[some] != pb_of[some]
    assert a1.pseudonym_to_subject.lookup([pa_of[some], pb_of[some], "zz"]).tolist() == [some, -1, -1]
    assert b.pseudonym_to_subject.lookup([pb_of[some]]).tolist() == [some]


def test_ineligible_and_erased_subjects_are_never_emitted(ctx: Context, population: dict[str, int]) -> None:
    ids = sorted(population.values())
    eligible = ids[::3]
    erased = eligible[0]
    with ctx.db.transaction() as s:
        shred(s, erased)
    emission = run(ctx, np.array([*eligible, 10**9]), k=1)
    emitted = set(emission.pseudonym_to_subject.subject_ids.tolist())
    assert emitted == set(eligible) - {erased}
    assert emission.stats.eligible == len(eligible) + 1
    assert emission.stats.loaded == emission.stats.emitted == len(eligible) - 1
    assert run(ctx, np.array([], dtype=np.int64)).stats.emitted == 0


def test_sparse_ids_use_in_lists(ctx: Context, population: dict[str, int]) -> None:
    ids = sorted(population.values())
    sparse = [ids[0], ids[-1]]
    emission = run(ctx, sparse, k=1)
    assert sorted(emission.pseudonym_to_subject.subject_ids.tolist()) == sparse


def test_tampered_profile_is_skipped_and_counted(ctx: Context, population: dict[str, int]) -> None:
    ids = sorted(population.values())
    victim, other = ids[0], ids[1]
    with ctx.db.session() as s:
        sealed_other = s.scalar(select(SubjectProfile.sealed).where(SubjectProfile.subject_id == other))
    with ctx.db.transaction() as s:  # another subject's ciphertext moved onto this row
        s.execute(update(SubjectProfile).where(SubjectProfile.subject_id == victim).values(sealed=sealed_other))
    emission = run(ctx, ids, k=1)
    assert emission.stats.unreadable == 1
    assert victim not in emission.pseudonym_to_subject.subject_ids.tolist()


def test_k_anonymity_on_emitted_rows(ctx: Context, population: dict[str, int]) -> None:
    features = [*FEATURES, {"field": "age", "transform": "quantile", "q": 6, "name": "age_q"}]
    ids = list(population.values())
    for k in (2, 5, 9):
        emission = run(ctx, ids, k=k, features=features)
        rows = [tuple(r.values()) for r in table_of(emission).drop_columns(["pseudonym"]).to_pylist()]
        counts: dict[tuple, int] = {}
        for r in rows:
            counts[r] = counts.get(r, 0) + 1
        assert all(c >= k for c in counts.values())
        assert emission.stats.emitted + emission.stats.suppressed_rows == 48
        assert emission.stats.emitted == len(rows)
    strict = run(ctx, ids, k=49)
    assert strict.stats.emitted == 0
    assert strict.stats.suppressed_rows == 48


def test_transform_not_allowed_by_catalog_is_refused(ctx: Context, population: dict[str, int]) -> None:
    ids = list(population.values())
    for bad in (
        {"field": "city", "transform": "identity"},
        {"field": "national_id", "transform": "identity"},
        {"field": "missing", "transform": "identity"},
    ):
        with pytest.raises(InvalidInput):
            run(ctx, ids, features=[bad])
    with pytest.raises(InvalidInput):
        run(ctx, ids, k=0)


def test_worker_processes_give_the_same_emission(ctx: Context, population: dict[str, int]) -> None:
    ids = list(population.values())
    inline = run(ctx, ids, workers=1)
    parallel = run(ctx, ids, workers=2)
    assert table_of(parallel).equals(table_of(inline))
    assert np.array_equal(parallel.pseudonym_to_subject.subject_ids, inline.pseudonym_to_subject.subject_ids)


def erase_and_tamper(ctx: Context, ids: list[int]) -> tuple[int, int, int]:
    """Erase the first subject and move the third's sealed profile onto the second's row: (erased, victim,
    other)."""
    erased, victim, other = ids[0], ids[1], ids[2]
    with ctx.db.transaction() as s:
        shred(s, erased)
    with ctx.db.session() as s:
        sealed_other = s.scalar(select(SubjectProfile.sealed).where(SubjectProfile.subject_id == other))
    with ctx.db.transaction() as s:  # another subject's ciphertext moved onto this row
        s.execute(update(SubjectProfile).where(SubjectProfile.subject_id == victim).values(sealed=sealed_other))
    return erased, victim, other


def test_workers_reading_their_own_rows_skip_erased_and_tampered_profiles(
    ctx: Context, population: dict[str, int]
) -> None:
    # Decrypt workers read their chunks' sealed rows from the database themselves: an erased subject has none
    # and a profile sealed for another subject fails to open, in the workers as in this process.
    ids = sorted(population.values())
    erased, victim, _ = erase_and_tamper(ctx, ids)
    parallel = run(ctx, ids, k=1, workers=2)
    inline = run(ctx, ids, k=1, workers=1)
    assert parallel.stats == inline.stats
    assert parallel.stats.unreadable == 1
    assert parallel.stats.loaded == len(ids) - 2  # erased: no row; tampered: read, not opened
    emitted = set(parallel.pseudonym_to_subject.subject_ids.tolist())
    assert emitted == set(ids) - {erased, victim}
    assert table_of(parallel).equals(table_of(inline))


def test_a_shared_decrypt_pool_gives_the_same_emissions(ctx: Context, population: dict[str, int]) -> None:
    # A job run in one process keeps one pool for its plan and all its shards: emissions through it (scoped
    # as two different jobs) are those of a pool per emission.
    ids = list(population.values())
    with DecryptPool(2) as pool:
        shared = [run(ctx, ids, workers=2, pool=pool, pseudonym_scope=scope) for scope in ("job:1", "job:2")]
    for scope, emission in zip(("job:1", "job:2"), shared, strict=True):
        assert table_of(emission).equals(table_of(run(ctx, ids, workers=1, pseudonym_scope=scope)))
    assert not set(table_of(shared[0]).column("pseudonym").to_pylist()) & set(
        table_of(shared[1]).column("pseudonym").to_pylist()
    )


# --- the catalog's promise, enforced on the real emission ------------------------------------------------
def distinct_values(table: pa.Table) -> dict[str, int]:
    return {name: len(set(table.column(name).drop_null().to_pylist())) for name in table.column_names[1:]}


def test_emitted_features_never_exceed_the_promised_distinct_values(ctx: Context) -> None:
    add_catalog(ctx)
    ids = list(add_subjects(ctx, 200).values())
    # Every feature exactly at its field's limit (age: 4 bins; income: 20000, 50000, 80000).
    features = [*FEATURES, {"field": "age", "transform": "quantile", "q": 6, "name": "age_q"}]
    table = table_of(run(ctx, ids, k=1, features=features))
    assert table.num_rows == 200
    promised = {"age": 4, "balance": 4, "income": 3, "city": 2, "segment": 2, "age_q": 6}
    seen = distinct_values(table)
    assert all(seen[name] <= promised[name] for name in promised), seen
    assert seen["income"] == 3  # at the limit, and no finer


def test_the_topcode_step_attack_sends_nothing(ctx: Context) -> None:
    add_catalog(ctx)
    ids = list(add_subjects(ctx, 200).values())
    attack = {"field": "income", "transform": "topcode", "lower": 0, "upper": 100000, "step": 10}
    with pytest.raises(InvalidInput, match="finer than the catalog promises") as caught:
        run(ctx, ids, k=1, features=[attack])
    assert {e["limit"] for e in caught.value.extra["errors"]} == {"max_values", "min_step"}


def test_emission_counts_what_it_really_produced(ctx: Context, population: dict[str, int]) -> None:
    # Defence in depth: a quantile feature within its promise (q=2 of at most 4) is given more cut points
    # than the promise allows (as shards are given cut points computed elsewhere); the emission counts
    # the values it produced and sends nothing, with no count in the message.
    ids = list(population.values())
    feature = {"field": "balance", "transform": "quantile", "q": 2}
    cuts = {"balance": [1005.0, 1010.0, 1020.0, 1030.0, 1040.0]}
    with pytest.raises(InvalidInput, match="more distinct values") as caught:
        run(ctx, ids, k=1, features=[feature], quantile_cuts=cuts)
    assert not any(ch.isdigit() for ch in caught.value.detail)
    # The same cut points within the promise pass.
    table = table_of(run(ctx, ids, k=1, features=[feature], quantile_cuts={"balance": cuts["balance"][:3]}))
    assert distinct_values(table)["balance"] == 4


def one(ctx: Context, subject_id: int, *, features: list | None = None, cuts: dict | None = None, scope: str = "rt"):
    specs = parse_features(features or FEATURES)
    with ctx.db.session() as s:
        catalog = catalog_fields(s, [spec.field for spec in specs])
        return emit_one(
            s,
            ctx.vault,
            ctx.keys,
            partner_key="insurer",
            features=specs,
            subject_id=subject_id,
            pseudonym_scope=scope,
            quantile_cuts=cuts if cuts is not None else {},
            catalog=catalog,
        )


def test_one_subject_gets_what_the_population_emission_gives_it(ctx: Context, population: dict[str, int]) -> None:
    # Real-time decisions emit one customer at a time: the same pseudonym and values as `emit` at k=1 with the
    # population's quantile cut points, for every subject (nulls included: one profile lacks two fields).
    ids = sorted(population.values())
    with ctx.db.transaction() as s:
        store_profiles(s, ctx.vault, [("cust-sparse", {"age": 40, "city": "Lhasa"})], ctx.keys.blind_index)
    with ctx.db.session() as s:
        sparse = s.scalar(select(Subject.id).where(Subject.blind_ref == ctx.keys.blind_index("cust-sparse")))
        cuts = quantile_cut_points(
            s, ctx.vault, ctx.keys, partner_key="insurer", features=parse_features(FEATURES), subject_ids=ids
        )
    everyone = [*ids, sparse]
    table = run(ctx, everyone, k=1, pseudonym_scope="rt", quantile_cuts=cuts).to_table().to_pylist()
    assert len(table) == len(everyone)
    names = [f.get("name", f["field"]) for f in FEATURES]
    by_pseudonym = {row["pseudonym"]: [row[n] for n in names] for row in table}
    for sid in everyone:
        got = one(ctx, sid, cuts=cuts)
        assert got is not None
        pseudonym, values = got
        assert by_pseudonym[pseudonym] == values
    assert one(ctx, sparse, cuts=cuts)[1][2] is None  # no income in that profile: null, not a default


def test_one_subject_without_a_readable_profile_gives_nothing(ctx: Context, population: dict[str, int]) -> None:
    ids = sorted(population.values())
    erased, victim, other = erase_and_tamper(ctx, ids)
    features = [f for f in FEATURES if f["transform"] != "quantile"]
    assert one(ctx, erased, features=features) is None
    assert one(ctx, victim, features=features) is None
    assert one(ctx, 10**9, features=features) is None
    assert one(ctx, other, features=features) is not None


def test_one_subject_keeps_every_promise_check(ctx: Context, population: dict[str, int]) -> None:
    sid = next(iter(population.values()))
    attack = {"field": "income", "transform": "topcode", "lower": 0, "upper": 100000, "step": 10}
    with pytest.raises(InvalidInput, match="finer than the catalog promises"):
        one(ctx, sid, features=[attack])
    with pytest.raises(InvalidInput, match="cut points"):  # a quantile of one subject would say nothing safe
        one(ctx, sid, features=FEATURES, cuts={})
    # Cut points beyond the field's promise (as in test_emission_counts_what_it_really_produced): nothing.
    too_fine = {"balance": [1000.0 + i for i in range(1, 48, 2)]}
    far = sorted(population.values())[-1]
    with pytest.raises(InvalidInput, match="catalog promises; nothing was emitted"):
        one(ctx, far, features=[{"field": "balance", "transform": "quantile", "q": 2}], cuts=too_fine)
