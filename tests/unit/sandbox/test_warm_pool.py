"""WarmPool: answers equal the batch path's, one request per runner at a time, bounded runners, clean close."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from sandbox import DecisionSchema, JobFailed, Limits, OnnxModel, WarmPool, run_job
from tests.unit.sandbox import onnx_factory

YES_NO = DecisionSchema.of_labels("no", "yes")
LIMITS = Limits(cpu_seconds=60, wall_seconds=600)


def test_answers_match_the_batch_path() -> None:
    model = OnnxModel(onnx_factory.logistic_regression([1.0, -1.0], 0.25))
    rows = [[2.0, 0.0], [0.0, 3.0], [None, 1.0], [0.5, 0.5]]
    batch = run_job(
        model,
        pa.table(
            {"pseudonym": [f"p{i}" for i in range(len(rows))], "a": [r[0] for r in rows], "b": [r[1] for r in rows]}
        ),
        YES_NO,
        LIMITS,
    )
    pool = WarmPool(model, YES_NO, ["a", "b"], limits=LIMITS, size=1)
    try:
        warm = [pool.decide(f"p{i}", row) for i, row in enumerate(rows)]
    finally:
        pool.close()
    assert warm == batch.decisions.column("decision").to_pylist()


def test_number_decisions_are_checked_against_the_range() -> None:
    model = OnnxModel(onnx_factory.logistic_regression([1.0], 0.0))
    inside = WarmPool(model, DecisionSchema.number_range(0.0, 1.0), ["a"], limits=LIMITS, size=1)
    narrow = WarmPool(model, DecisionSchema.number_range(0.0, 0.1), ["a"], limits=LIMITS, size=1)
    try:
        assert inside.decide("p", [0.0]) == pytest.approx(0.5)
        with pytest.raises(JobFailed) as info:
            narrow.decide("p", [0.0])  # sigmoid(0) = 0.5 is outside [0, 0.1]
        assert info.value.reason == "model output does not match the decision schema"
        assert narrow.stats().retired == 1
    finally:
        inside.close()
        narrow.close()


def test_concurrent_requests_share_at_most_size_runners_and_each_gets_its_own_answer() -> None:
    pool = WarmPool(OnnxModel(onnx_factory.logistic_regression([1.0])), YES_NO, ["x"], limits=LIMITS, size=2)
    answers: dict[str, str | float] = {}
    seen: set[int] = set()

    def ask(i: int) -> None:
        value = 5.0 if i % 2 else -5.0
        answers[f"p{i}"] = pool.decide(f"p{i}", [value])
        seen.update(pool.pids())

    try:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == {f"p{i}": "yes" if i % 2 else "no" for i in range(40)}
        assert len(seen) <= 2
        assert pool.stats().started <= 2
    finally:
        pool.close()
    assert pool.stats().live == 0
    with pytest.raises(JobFailed):
        pool.decide("late", [1.0])


def test_wrong_feature_count_is_refused_before_the_sandbox() -> None:
    pool = WarmPool(OnnxModel(onnx_factory.logistic_regression([1.0])), YES_NO, ["x"], limits=LIMITS, size=1)
    try:
        with pytest.raises(ValueError, match="expected 1 features"):
            pool.decide("p", [1.0, 2.0])
        assert pool.stats().started == 0
    finally:
        pool.close()
