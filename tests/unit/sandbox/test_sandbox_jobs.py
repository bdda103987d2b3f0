"""Scoring jobs and model inspection through the real bubblewrap sandbox."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pyarrow as pa
import pytest

from sandbox import (
    Bubblewrap,
    DecisionSchema,
    JobFailed,
    Limits,
    ModelRejected,
    OnnxModel,
    PythonModule,
    SandboxUnavailable,
    inspect_onnx,
    run_job,
)
from sandbox._identity import Identity
from sandbox._runner import IDENTITY_FAILED
from sandbox._seccomp import build_filter
from tests.unit.sandbox import onnx_factory

YES_NO = DecisionSchema.of_labels("no", "yes")
FAST = Limits(wall_seconds=30, cpu_seconds=20)


def features(n: int = 6) -> pa.Table:
    return pa.table(
        {
            "pseudonym": pa.array([f"p{i:04d}" for i in range(n)], type=pa.string()),
            "a": np.arange(n, dtype=np.float64) - n / 2,
            "b": np.ones(n, dtype=np.int64),
        }
    )


def test_logistic_regression_thresholds_into_two_labels() -> None:
    model = OnnxModel(onnx_factory.logistic_regression([1.0, 0.0]))
    out = run_job(model, features(), YES_NO, FAST)
    table = out.decisions
    assert table.schema.names == ["pseudonym", "decision"]
    # a = -3..2: sigmoid(a) >= 0.5 exactly when a >= 0
    assert table.column("decision").to_pylist() == ["no", "no", "no", "yes", "yes", "yes"]
    assert table.column("pseudonym").to_pylist() == [f"p{i:04d}" for i in range(6)]
    assert out.stats.rows == 6
    assert out.stats.wall_seconds > 0
    assert out.stats.peak_rss_bytes > 0


def test_score_matrix_picks_label_by_argmax() -> None:
    schema = DecisionSchema.of_labels("low", "mid", "high")
    model = OnnxModel(onnx_factory.linear_scores([[-1.0, 0.0, 1.0], [0.0, 0.5, 0.0]]))
    out = run_job(model, features(), schema, FAST)
    assert out.decisions.column("decision").to_pylist() == ["low", "low", "low", "mid", "high", "high"]


def test_label_output_indexes_the_schema_labels() -> None:
    table = pa.table({"pseudonym": ["x", "y", "z"], "k": [2.0, 0.0, 1.0]})
    schema = DecisionSchema.of_labels("a", "b", "c")
    out = run_job(OnnxModel(onnx_factory.label_of_first_feature(1)), table, schema, FAST)
    assert out.decisions.to_pydict() == {"pseudonym": ["x", "y", "z"], "decision": ["c", "a", "b"]}


def test_label_index_out_of_range_fails_the_job() -> None:
    table = pa.table({"pseudonym": ["x"], "k": [7.0]})
    with pytest.raises(JobFailed) as info:
        run_job(OnnxModel(onnx_factory.label_of_first_feature(1)), table, YES_NO, FAST)
    assert info.value.reason == "model output does not match the decision schema"


def test_number_schema_passes_scores_through() -> None:
    model = OnnxModel(onnx_factory.logistic_regression([0.0, 0.0], bias=0.0))
    out = run_job(model, features(4), DecisionSchema.number_range(0, 1), FAST)
    assert out.decisions.column("decision").to_pylist() == [0.5] * 4
    assert out.decisions.schema.field("decision").type == pa.float64()


def test_streams_record_batches_and_nulls_become_nan() -> None:
    def batches():
        for start in range(0, 150_000, 50_000):
            a = pa.array(np.full(50_000, 1.0))
            if start == 0:
                a = pa.array([None] + [1.0] * 49_999, type=pa.float64())
            names = pa.array([f"s{start + i}" for i in range(50_000)])
            yield pa.record_batch([names, a], names=["pseudonym", "a"])

    out = run_job(OnnxModel(onnx_factory.logistic_regression([1.0])), batches(), YES_NO, FAST)
    assert out.stats.rows == 150_000
    decisions = out.decisions.column("decision").to_pylist()
    assert decisions[0] == "no"  # NaN >= 0.5 is false
    assert set(decisions[1:]) == {"yes"}


def test_zero_rows() -> None:
    empty = features(0)
    out = run_job(OnnxModel(onnx_factory.logistic_regression([1.0, 1.0])), empty, YES_NO, FAST)
    assert out.decisions.num_rows == 0


def test_large_string_pseudonyms_come_back_as_strings() -> None:
    table = features(3).set_column(0, "pseudonym", pa.array(["x", "y", "z"], type=pa.large_string()))
    for model in (
        OnnxModel(onnx_factory.logistic_regression([1.0, 0.0])),
        PythonModule("def score(table):\n    return ['no', 'no', 'yes']\n", approved=True),
    ):
        out = run_job(model, table, YES_NO, FAST)
        assert out.decisions.to_pydict() == {"pseudonym": ["x", "y", "z"], "decision": ["no", "no", "yes"]}
        assert out.decisions.schema.field("pseudonym").type == pa.string()


def test_a_thread_left_running_does_not_hold_the_job() -> None:
    source = (
        "import threading, time\n"
        "def score(table):\n"
        "    threading.Thread(target=time.sleep, args=(3600,)).start()\n"
        "    print('scored', end='')\n"
        "    return ['yes'] * table.num_rows\n"
    )
    out = run_job(PythonModule(source, approved=True), features(2), YES_NO, Limits(wall_seconds=20, cpu_seconds=20))
    assert out.decisions.column("decision").to_pylist() == ["yes", "yes"]
    assert out.stats.wall_seconds < 20  # the runner exits once its decisions are written


def test_approved_python_module_scores() -> None:
    source = "def score(table):\n    return ['yes' if b > 0 else 'no' for b in table.column('a').to_pylist()]\n"
    out = run_job(PythonModule(source, approved=True), features(4), YES_NO, FAST)
    assert out.decisions.column("decision").to_pylist() == ["no", "no", "no", "yes"]


def test_unapproved_python_module_is_refused() -> None:
    with pytest.raises(ModelRejected, match="not approved"):
        run_job(PythonModule("def score(t):\n    return []\n"), features(), YES_NO, FAST)


def test_python_module_without_score_function() -> None:
    with pytest.raises(JobFailed) as info:
        run_job(PythonModule("x = 1\n", approved=True), features(), YES_NO, FAST)
    assert info.value.reason == "python module defines no score(table) function"


def test_python_exception_reason_does_not_echo_the_message() -> None:
    source = "def score(table):\n    raise ValueError('customer 42 earns 99k')\n"
    with pytest.raises(JobFailed) as info:
        run_job(PythonModule(source, approved=True), features(), YES_NO, FAST)
    assert info.value.reason == "model failed while scoring"
    assert "99k" not in str(info.value)
    assert "99k" in info.value.detail  # for the operator's log only


def test_label_not_in_schema_fails_without_echoing_it() -> None:
    source = "def score(table):\n    return ['maybe'] * table.num_rows\n"
    with pytest.raises(JobFailed) as info:
        run_job(PythonModule(source, approved=True), features(3), YES_NO, FAST)
    assert info.value.reason == "output invalid: 3 decisions with a label not in the schema"
    assert "maybe" in info.value.detail


def test_number_out_of_range_fails() -> None:
    source = "def score(table):\n    return [2.0] * table.num_rows\n"
    with pytest.raises(JobFailed, match=r"output invalid: 3 decisions outside \[0, 1\]"):
        run_job(PythonModule(source, approved=True), features(3), DecisionSchema.number_range(0, 1), FAST)


def test_wrong_number_of_decisions_from_python() -> None:
    source = "def score(table):\n    return ['yes']\n"
    with pytest.raises(JobFailed) as info:
        run_job(PythonModule(source, approved=True), features(3), YES_NO, FAST)
    assert info.value.reason == "model output does not match the decision schema"


# A hostile module that bypasses the runner and writes its own result stream to the runner's output fd.
FORGED = """
import os, pyarrow as pa
def score(table):
    names = table.column('pseudonym').to_pylist()
    forged = pa.table({{'pseudonym': {pseudonyms}, 'decision': ['yes'] * len({pseudonyms})}})
    out = os.fdopen(3, 'wb')
    with pa.ipc.new_stream(out, forged.schema) as writer:
        writer.write_table(forged)
    out.flush()
    os._exit(0)
"""


@pytest.mark.parametrize(
    ("pseudonyms", "reason"),
    [
        ("names[:-2]", "output invalid: 2 decisions missing"),
        ("names + names[:1]", "output invalid: more than one decision for a pseudonym"),
        ("names[:-1] + ['intruder']", "output invalid: 1 decisions for pseudonyms not in the input"),
    ],
)
def test_forged_output_streams_are_rejected(pseudonyms: str, reason: str) -> None:
    module = PythonModule(FORGED.format(pseudonyms=pseudonyms), approved=True)
    with pytest.raises(JobFailed) as info:
        run_job(module, features(5), YES_NO, FAST)
    assert info.value.reason == reason


def test_garbage_output_is_rejected() -> None:
    source = "import os\ndef score(table):\n    os.write(3, b'not arrow at all')\n    os._exit(0)\n"
    with pytest.raises(JobFailed, match="output invalid: not an Arrow IPC stream"):
        run_job(PythonModule(source, approved=True), features(), YES_NO, FAST)


def test_inputs_need_pseudonyms_and_numeric_features_for_onnx() -> None:
    model = OnnxModel(onnx_factory.logistic_regression([1.0]))
    with pytest.raises(ValueError, match="pseudonym"):
        run_job(model, pa.table({"a": [1.0]}), YES_NO, FAST)
    with pytest.raises(ModelRejected, match="numeric features only"):
        run_job(model, pa.table({"pseudonym": ["x"], "cluster": ["c1"]}), YES_NO, FAST)
    with pytest.raises(ValueError, match="duplicate pseudonyms"):
        run_job(model, pa.table({"pseudonym": ["x", "x"], "a": [1.0, 2.0]}), YES_NO, FAST)


def test_onnx_width_mismatch_at_run_time() -> None:
    model = OnnxModel(onnx_factory.logistic_regression([1.0, 1.0, 1.0]))
    with pytest.raises(JobFailed) as info:
        run_job(model, features(), YES_NO, FAST)
    assert info.value.reason == "model input signature does not match the contract"


# --- inspection ---------------------------------------------------------------------------------------


def test_inspect_accepts_a_conforming_model() -> None:
    data = onnx_factory.logistic_regression([1.0, 2.0, 3.0])
    info = inspect_onnx(data, feature_names=["a", "b", "c"], schema=YES_NO)
    assert info.output_name == "score"
    assert info.feature_count == 3
    assert info.inputs[0].name == "features"
    assert info.inputs[0].shape == (None, 3)
    assert info.size_bytes == len(data)
    assert len(info.sha256) == 64


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (b"", "model is empty"),
        (b"\x00\x01garbage" * 100, "not a valid ONNX model"),
        (onnx_factory.logistic_regression([1.0, 2.0], input_name="x"), "exactly one input named 'features'"),
        (onnx_factory.logistic_regression([1.0, 2.0, 3.0, 4.0]), "takes 4 features, the contract has 3"),
        (onnx_factory.wrong_dtype(3), "must be tensor(float)"),
        (onnx_factory.no_decision_output(3), "output named 'label' or 'score'"),
        (onnx_factory.linear_scores([[1.0] * 5] * 3), "5 columns for 2 labels"),
    ],
)
def test_inspect_rejects_with_a_clear_reason(model: bytes, message: str) -> None:
    with pytest.raises(ModelRejected) as info:
        inspect_onnx(model, feature_names=["a", "b", "c"], schema=YES_NO)
    assert message in info.value.reason


def test_inspect_rejects_oversized_models_before_parsing() -> None:
    with pytest.raises(ModelRejected, match="the limit is 1000"):
        inspect_onnx(b"\x08" * 1001, feature_names=["a"], max_bytes=1000)


def test_number_schema_needs_a_score_output() -> None:
    with pytest.raises(ModelRejected, match="output named 'score'"):
        inspect_onnx(
            onnx_factory.label_of_first_feature(1),
            feature_names=["a"],
            schema=DecisionSchema.number_range(0, 1),
        )


# --- no isolation, no job --------------------------------------------------------------------------------


def test_missing_bubblewrap_refuses_every_operation() -> None:
    absent = Bubblewrap(path="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="not installed"):
        run_job(OnnxModel(onnx_factory.logistic_regression([1.0, 1.0])), features(), YES_NO, bubblewrap=absent)
    with pytest.raises(SandboxUnavailable):
        run_job(PythonModule("def score(t):\n    return []\n", approved=True), features(), YES_NO, bubblewrap=absent)
    with pytest.raises(SandboxUnavailable):
        inspect_onnx(onnx_factory.logistic_regression([1.0]), feature_names=["a"], bubblewrap=absent)


def test_a_bwrap_that_cannot_sandbox_is_refused(tmp_path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SandboxUnavailable, match="does not start"):
        run_job(
            PythonModule("def score(t):\n    return []\n", approved=True),
            features(),
            YES_NO,
            bubblewrap=Bubblewrap(path=str(fake)),
        )


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox user matters only when the server runs as root")
def test_a_root_server_without_the_sandbox_user_refuses_code_bearing_jobs() -> None:
    unknown = Bubblewrap(user="dataspace-sandbox-absent")
    for attempt in (
        lambda: run_job(
            OnnxModel(onnx_factory.logistic_regression([1.0, 1.0])), features(), YES_NO, bubblewrap=unknown
        ),
        lambda: run_job(
            PythonModule("def score(t):\n    return []\n", approved=True), features(), YES_NO, bubblewrap=unknown
        ),
        lambda: inspect_onnx(onnx_factory.logistic_regression([1.0]), feature_names=["a"], bubblewrap=unknown),
    ):
        with pytest.raises(SandboxUnavailable, match="refusing to run partner code as root"):
            attempt()


@pytest.mark.skipif(os.geteuid() != 0, reason="the runner drops privileges only when the server runs as root")
def test_the_runner_itself_refuses_to_stay_root() -> None:
    """Even a launcher told to 'drop' to uid 0 does not get partner code run as root: the runner exits 97."""
    launcher = Bubblewrap()
    for identity in (Identity(0, 0, drop=True), Identity(0, 995, drop=True)):
        read_fd, write_fd = os.pipe()
        os.write(write_fd, build_filter())
        os.close(write_fd)
        try:
            command = launcher.command(Limits(), read_fd, identity=identity)
            result = subprocess.run(command, pass_fds=(read_fd,), capture_output=True, timeout=60, check=False)
        finally:
            os.close(read_fd)
        assert result.returncode == IDENTITY_FAILED
        assert b"refusing to run as root" in result.stderr
