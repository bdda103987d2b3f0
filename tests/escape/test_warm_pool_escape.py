"""The escape suite against the warm path: runners of `WarmPool` keep the batch jobs' isolation, and every
runner that misbehaves, times out or has served its quota is a dead process afterwards (seen from the host)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from sandbox import DecisionSchema, JobFailed, Limits, OnnxModel, WarmPool
from tests.unit.sandbox import onnx_factory

pytestmark = pytest.mark.escape

YES_NO = DecisionSchema.of_labels("no", "yes")
LIMITS = Limits(cpu_seconds=60, wall_seconds=600, memory_bytes=1024 << 20)


def loop_model() -> bytes:
    """score = sigmoid(n) after a Loop of n = features[0, 0] iterations: a model that hangs on demand."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1, 1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1, 1]),
        ],
        [numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), "one")],
    )
    nodes = [
        helper.make_node("Constant", [], ["idx"], value=helper.make_tensor("i0", TensorProto.INT64, [], [0])),
        helper.make_node("Gather", ["features", "idx"], ["row"], axis=0),
        helper.make_node("Gather", ["row", "idx"], ["first"], axis=0),
        helper.make_node("Cast", ["first"], ["trips"], to=TensorProto.INT64),
        helper.make_node("Loop", ["trips", "true", "zero"], ["total"], body=body),
        helper.make_node("Sigmoid", ["total"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hang",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        [
            numpy_helper.from_array(np.asarray(True), "true"),
            numpy_helper.from_array(np.zeros((1, 1), dtype=np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` on the host (read from the host's /proc, which the sandbox does not have)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found.append(child)
                todo.append(child)
    return found


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def runner_processes(pool: WarmPool) -> list[int]:
    """The Python runners (partner code's processes) inside the pool's sandboxes."""
    out = []
    for root in pool.pids():
        for pid in descendants(root):
            try:
                if Path(f"/proc/{pid}/comm").read_text().startswith("python"):
                    out.append(pid)
            except FileNotFoundError:
                pass
    return out


@pytest.fixture
def pools():
    made: list[WarmPool] = []

    def make(model: bytes, **kw: object) -> WarmPool:
        pool = WarmPool(OnnxModel(model), YES_NO, ["x"], limits=LIMITS, **kw)  # type: ignore[arg-type]
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


def test_a_request_over_the_time_limit_kills_the_whole_sandbox_and_a_fresh_one_answers_next(pools) -> None:
    pool = pools(loop_model(), size=1, request_seconds=1.0)
    assert pool.decide("warm-up", [1.0]) == "yes"
    (sandbox,) = pool.pids()
    inside = descendants(sandbox)
    assert inside
    started = time.monotonic()
    with pytest.raises(JobFailed) as info:
        pool.decide("victim", [2e9])  # two billion loop iterations
    assert info.value.reason == "timeout"
    assert time.monotonic() - started < 30  # the parent's clock, not the CPU limit, ended it
    assert not alive(sandbox)
    assert not any(alive(pid) for pid in inside)  # bwrap and everything below it
    assert pool.decide("next", [1.0]) == "yes"
    assert sandbox not in pool.pids()
    assert pool.stats().retired >= 1


def test_a_runner_that_fails_is_discarded(pools) -> None:
    # label = int(x): x = 5 indexes past the schema's two labels, the runner reports an error and exits.
    pool = pools(onnx_factory.label_of_first_feature(1), size=1)
    assert pool.decide("a", [1.0]) == "yes"
    (sandbox,) = pool.pids()
    with pytest.raises(JobFailed) as info:
        pool.decide("b", [5.0])
    assert info.value.reason == "model output does not match the decision schema"
    assert not alive(sandbox)
    assert pool.decide("c", [0.0]) == "no"
    assert sandbox not in pool.pids()


def test_after_n_decisions_the_runner_is_a_fresh_process(pools) -> None:
    pool = pools(onnx_factory.logistic_regression([1.0]), size=1, max_decisions=3)
    pool.decide("p0", [1.0])
    (first,) = pool.pids()
    first_runner = runner_processes(pool)
    pool.decide("p1", [1.0])
    pool.decide("p2", [1.0])  # the third answer is its last
    assert not alive(first)
    assert not any(alive(pid) for pid in first_runner)
    pool.decide("p3", [1.0])
    (second,) = pool.pids()
    assert second != first
    assert set(runner_processes(pool)).isdisjoint(first_runner)
    assert pool.stats().started == 2


def test_two_models_or_partners_never_share_a_process(pools) -> None:
    always_no = pools(onnx_factory.logistic_regression([0.0], -10.0), size=2)
    always_yes = pools(onnx_factory.logistic_regression([0.0], 10.0), size=2)
    for i in range(6):
        assert always_no.decide(f"n{i}", [1.0]) == "no"
        assert always_yes.decide(f"y{i}", [1.0]) == "yes"
    a = set(always_no.pids()) | set(runner_processes(always_no))
    b = set(always_yes.pids()) | set(runner_processes(always_yes))
    assert a
    assert b
    assert a.isdisjoint(b)


def test_warm_runners_are_not_root_and_run_under_the_seccomp_filter(pools) -> None:
    pool = pools(onnx_factory.logistic_regression([1.0]), size=1)
    pool.decide("p", [1.0])
    runners = runner_processes(pool)
    assert runners
    for pid in runners:
        info = status(pid)
        uids = [int(x) for x in info["Uid"].split()]
        gids = [int(x) for x in info["Gid"].split()]
        assert 0 not in uids, info["Uid"]
        assert 0 not in gids, info["Gid"]
        assert int(info["CapEff"], 16) == 0
        assert int(info["CapBnd"], 16) == 0 or os.geteuid() != 0
        assert info["NoNewPrivs"].strip() == "1"
        assert info["Seccomp"].strip() == "2"  # filter mode: the batch jobs' allow-list


def test_only_onnx_is_served_warm() -> None:
    from sandbox import ModelRejected, PythonModule

    with pytest.raises(ModelRejected):
        WarmPool(PythonModule("def score(t):\n    return []\n", approved=True), YES_NO, ["x"])  # type: ignore[arg-type]
