"""Sandbox bench: start overhead (median of trivial runs) and N-row logistic-regression scoring throughput.

.venv/bin/python bench/sandbox.py --n 1000000

Floor of the cold start, measured in the same run and interleaved with the sandbox runs (so both see the same
machine): the bare interpreter importing what the sandbox runtime imports,
``python -I -S -B -c "import sys; sys.path += SITES; import numpy, pyarrow, onnxruntime"`` with the same
interpreter, the same site directories the sandbox binds and the same environment the sandbox gets
(`runtime_environment`: one OpenBLAS/OpenMP thread; with the host's environment OpenBLAS starts a thread per
core at import, which the sandbox never pays). Target: cold start p50 <= 1.3x the floor's p50.

Also printed, for information and not judged: the same floor ending in ``os._exit(0)``, as the runner ends
(it skips the interpreter's teardown); and the floor in the host's environment (the issue's first figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _report

from sandbox import DecisionSchema, Limits, OnnxModel, PythonModule, run_job
from sandbox._bubblewrap import _site_dirs, runtime_environment
from tests.unit.sandbox.onnx_factory import logistic_regression

FEATURES = 8


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000, help="rows in the scoring job")
    parser.add_argument("--starts", type=int, default=20, help="trivial runs for the start overhead")
    args = parser.parse_args()

    schema = DecisionSchema.of_labels("decline", "offer")
    tiny = pa.table({"pseudonym": ["p0"], "x": [1.0]})
    trivial_python = PythonModule("def score(table):\n    return ['offer'] * table.num_rows\n", approved=True)
    trivial_onnx = OnnxModel(logistic_regression([1.0]))
    run_job(trivial_python, tiny, schema)  # first run probes bubblewrap; not counted

    imports = f"import sys; sys.path += {_site_dirs()!r}; import numpy, pyarrow, onnxruntime"
    python = [os.path.realpath(sys.executable), "-I", "-S", "-B", "-c"]
    sandbox_env = runtime_environment(Limits().threads)
    floors = {  # name: (argv, environment)
        "floor": ([*python, imports], sandbox_env),
        "floor ending in os._exit": ([*python, imports + "; import os; os._exit(0)"], sandbox_env),
        "floor in the host's environment": ([*python, imports], None),
    }
    for argv, env in floors.values():  # warm the page cache as the probe run did for the sandbox
        subprocess.run(argv, env=env, check=True)
    times: dict[str, list[float]] = {name: [] for name in (*floors, "python", "onnx")}
    for _ in range(args.starts):  # interleaved: a shared machine's load moves them all alike
        for name, (argv, env) in floors.items():
            started = time.perf_counter()
            subprocess.run(argv, env=env, check=True)
            times[name].append(time.perf_counter() - started)
        for label, model in (("python", trivial_python), ("onnx", trivial_onnx)):
            started = time.perf_counter()
            run_job(model, tiny, schema)
            times[label].append(time.perf_counter() - started)
    for label, values in times.items():
        print(
            f"start ({label}, {args.starts} runs): p50 {statistics.median(values) * 1000:.0f} ms, "
            f"p99 {percentile(values, 0.99) * 1000:.0f} ms"
        )
    floor = statistics.median(times["floor"]) * 1000
    for label in ("python", "onnx"):
        _report.compare(
            f"sandbox cold start p50 ({label} model, 1 row)",
            statistics.median(times[label]) * 1000,
            floor,
            unit="ms",
            better="lower",
            target=1.3,
            floor_name="bare python -I -S + import numpy, pyarrow, onnxruntime",
        )
    for name in ("floor ending in os._exit", "floor in the host's environment"):
        for label in ("python", "onnx"):
            _report.compare(
                f"  for information, {label} against the {name}",
                statistics.median(times[label]) * 1000,
                statistics.median(times[name]) * 1000,
                unit="ms",
                better="lower",
                floor_name=name,
            )

    rng = np.random.default_rng(7)
    columns = {"pseudonym": pa.array([f"ps_{i:012d}" for i in range(args.n)], type=pa.string())}
    for j in range(FEATURES):
        columns[f"f{j}"] = pa.array(rng.standard_normal(args.n))
    table = pa.table(columns)
    weights = rng.standard_normal(FEATURES).tolist()
    model = OnnxModel(logistic_regression(weights, bias=0.1))
    started = time.perf_counter()
    out = run_job(model, table, schema, Limits(wall_seconds=120, cpu_seconds=120))
    elapsed = time.perf_counter() - started
    offers = out.decisions.column("decision").to_pylist().count("offer")
    print(
        f"logistic regression, {args.n} rows x {FEATURES} features: {elapsed:.2f} s end to end, "
        f"{args.n / elapsed:,.0f} rows/s (sandbox cpu {out.stats.cpu_seconds:.2f} s, "
        f"sandbox peak RSS {out.stats.peak_rss_bytes / 2**20:.0f} MiB, "
        f"output {out.stats.output_bytes / 2**20:.1f} MiB, "
        f"{offers} offers)"
    )
    _report.peak_rss()


if __name__ == "__main__":
    main()
