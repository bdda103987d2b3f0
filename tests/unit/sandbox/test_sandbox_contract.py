"""Contracts, output validation and the seccomp program, without starting a sandbox."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox import DecisionSchema, JobFailed, Limits
from sandbox._seccomp import ALLOWED_SYSCALLS, DENIED_SYSCALLS, UnsupportedArchitecture, build_filter
from sandbox._validate import validate_decisions

LABELS = DecisionSchema.of_labels("a", "b", "c")
UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


def stream(pseudonyms: list[str], decisions: list[object], decision_type: pa.DataType = pa.string()) -> bytes:
    table = pa.table(
        {"pseudonym": pa.array(pseudonyms, type=pa.string()), "decision": pa.array(decisions, type=decision_type)}
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_schema_rules() -> None:
    with pytest.raises(ValueError, match="at least one label"):
        DecisionSchema(labels=())
    with pytest.raises(ValueError, match="unique"):
        DecisionSchema.of_labels("x", "x")
    with pytest.raises(ValueError, match="not both"):
        DecisionSchema(labels=("x",), minimum=0, maximum=1)
    with pytest.raises(ValueError, match="minimum must not exceed"):
        DecisionSchema.number_range(2, 1)
    with pytest.raises(ValueError, match="finite"):
        DecisionSchema.number_range(0, float("inf"))
    with pytest.raises(ValueError, match="positive"):
        Limits(cpu_seconds=0)


unique_names = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=30, unique=True)


@given(names=unique_names, data=st.data())
def test_any_permutation_of_a_complete_answer_is_accepted(names: list[str], data: st.DataObject) -> None:
    decisions = data.draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=len(names), max_size=len(names)))
    order = data.draw(st.permutations(range(len(names))))
    output = stream([names[i] for i in order], [decisions[i] for i in order])
    table = validate_decisions(output, pa.chunked_array([pa.array(names)]), LABELS)
    assert dict(zip(table["pseudonym"].to_pylist(), table["decision"].to_pylist(), strict=True)) == dict(
        zip(names, decisions, strict=True)
    )


@given(names=unique_names, data=st.data())
def test_dropping_or_duplicating_a_decision_is_rejected(names: list[str], data: st.DataObject) -> None:
    victim = data.draw(st.integers(0, len(names) - 1))
    expected = pa.chunked_array([pa.array(names)])
    dropped = names[:victim] + names[victim + 1 :]
    with pytest.raises(JobFailed, match="1 decisions missing"):
        validate_decisions(stream(dropped, ["a"] * len(dropped)), expected, LABELS)
    doubled = [*names, names[victim]]
    with pytest.raises(JobFailed, match="more than one decision"):
        validate_decisions(stream(doubled, ["a"] * len(doubled)), expected, LABELS)


def test_numbers_and_types_are_checked() -> None:
    expected = pa.chunked_array([pa.array(["x", "y"])])
    number = DecisionSchema.number_range(0, 10)
    table = validate_decisions(stream(["x", "y"], [0, 10], pa.int64()), expected, number)
    assert table["decision"].type == pa.float64()
    with pytest.raises(JobFailed, match="1 decisions outside"):
        validate_decisions(stream(["x", "y"], [1.0, float("nan")], pa.float64()), expected, number)
    with pytest.raises(JobFailed, match="decisions are not numbers"):
        validate_decisions(stream(["x", "y"], ["a", "b"]), expected, number)
    with pytest.raises(JobFailed, match="decisions are not labels"):
        validate_decisions(stream(["x", "y"], [1.0, 2.0], pa.float64()), expected, LABELS)
    with pytest.raises(JobFailed, match="null"):
        validate_decisions(stream(["x", "y"], ["a", None]), expected, LABELS)


def test_seccomp_program_shape() -> None:
    program = build_filter("x86_64")
    assert len(program) % 8 == 0
    instructions = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert instructions[0] == (0x20, 0, 0, 4)  # load arch first
    compared = {k for code, _, _, k in instructions if code == 0x15}
    allowed = {nr for family in ALLOWED_SYSCALLS.values() for nr in family.values()}
    assert allowed <= compared
    assert instructions[-1] == (0x06, 0, 0, 0x80000000)  # foreign arch: kill
    with pytest.raises(UnsupportedArchitecture):
        build_filter("aarch64")


def test_seccomp_allow_list_never_lets_an_attackers_call_through() -> None:
    allowed = {name: nr for family in ALLOWED_SYSCALLS.values() for name, nr in family.items()}
    assert not set(allowed) & set(DENIED_SYSCALLS)
    assert not set(allowed.values()) & set(DENIED_SYSCALLS.values())
    for name in ("pidfd_open", "pidfd_getfd", "process_madvise", "ptrace", "socket", "unshare", "mount"):
        assert name in DENIED_SYSCALLS


@pytest.mark.skipif(not UNISTD_64.exists(), reason="no kernel headers (asm/unistd_64.h) to check the numbers against")
def test_seccomp_syscall_numbers_match_the_kernel_headers() -> None:
    numbers = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^#define __NR_(\w+) (\d+)$", UNISTD_64.read_text(), flags=re.MULTILINE)
    }
    table = {name: nr for family in ALLOWED_SYSCALLS.values() for name, nr in family.items()} | DENIED_SYSCALLS
    assert {name: numbers.get(name) for name in table} == table


def test_sandbox_package_imports_neither_dataspace_nor_fastapi() -> None:
    code = (
        "import sys, sandbox; bad = [m for m in ('dataspace', 'fastapi', 'sqlalchemy') if m in sys.modules]; print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
