"""One way for every bench to print a measurement beside its floor, and peak RSS.

A floor is the thinnest way to do the same work on the same machine, measured in the same run, so the
ratio carries over between machines where absolute figures do not. Every comparison prints as

    name: <value>  floor: <value>  ratio: <x> (target <= 2.0x: met)

``compare`` takes which way is better (``higher`` for throughputs, ``lower`` for times) and the target
ratio; ``difference`` is for targets stated as an absolute margin over the floor (e.g. "within 2 ms").
"""

from __future__ import annotations

import os
import resource
from pathlib import Path


def _fmt(v: float, unit: str) -> str:
    if unit == "s" and 0 < abs(v) < 0.1:
        return f"{v * 1000:,.2f} ms"
    if unit in ("ms", "s", "us"):
        return f"{v:,.3f} {unit}" if abs(v) < 10 else f"{v:,.1f} {unit}"
    if unit == "x":
        return f"{v:,.2f}x"
    if unit.endswith("/s"):
        return f"{v:,.0f} {unit}" if abs(v) >= 100 else f"{v:,.1f} {unit}"
    return f"{v:,.3g} {unit}".rstrip()


def ratio_line(
    name: str,
    value: float,
    floor: float,
    *,
    unit: str,
    better: str,
    target: float | None = None,
    floor_name: str = "floor",
) -> str:
    """``better``: "higher" (value / floor should reach ``target``) or "lower" (value / floor should stay at
    or below ``target``)."""
    if better not in ("higher", "lower"):
        raise ValueError(better)
    ratio = value / floor if floor else float("nan")
    line = f"{name}: {_fmt(value, unit)}  {floor_name}: {_fmt(floor, unit)}  ratio: {ratio:.2f}x"
    if target is not None:
        sign = ">=" if better == "higher" else "<="
        met = ratio >= target if better == "higher" else ratio <= target
        line += f" (target {sign} {target:g}x: {'met' if met else 'NOT met'})"
    return line


def compare(
    name: str,
    value: float,
    floor: float,
    *,
    unit: str,
    better: str,
    target: float | None = None,
    floor_name: str = "floor",
) -> float:
    """Print ``ratio_line`` and return the ratio."""
    print(ratio_line(name, value, floor, unit=unit, better=better, target=target, floor_name=floor_name), flush=True)
    return value / floor if floor else float("nan")


def difference(
    name: str, value: float, floor: float, *, unit: str, target: float | None = None, floor_name: str = "floor"
) -> float:
    """Print ``name: value  floor: value  difference: +d (target <= t)`` (lower is better); return the difference."""
    diff = value - floor
    line = f"{name}: {_fmt(value, unit)}  {floor_name}: {_fmt(floor, unit)}  difference: {diff:+,.3f} {unit}"
    if floor:
        line += f" ({value / floor:.1f}x)"
    if target is not None:
        line += f" (target <= {target:g} {unit}: {'met' if diff <= target else 'NOT met'})"
    print(line, flush=True)
    return diff


def value(name: str, v: float, *, unit: str, target: str | None = None) -> None:
    """A figure with no floor of its own (e.g. a speed-up), printed in the same shape."""
    print(f"{name}: {_fmt(v, unit)}" + (f" (target {target})" if target else ""), flush=True)


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def proc_peak_kib(pid: int) -> int:
    """VmHWM of a live process (0 where /proc cannot tell)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (0 where /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (a process may fork from any of its threads)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out.extend(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    out: list[int] = []
    stack = children(pid)
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children(child))
    return out


def peak_rss(label: str = "peak RSS", **others_kib: float) -> None:
    """Print this process's peak RSS and that of its largest waited-for child (``ru_maxrss`` of
    RUSAGE_CHILDREN: the largest single child, not a sum), plus any other named figures in KiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    parts = [f"this process {mib(own)}", f"largest child {mib(kids) if kids else '-'}"]
    parts += [f"{k.replace('_', ' ')} {mib(v)}" for k, v in others_kib.items()]
    print(f"{label}: " + ", ".join(parts) + f" (pid {os.getpid()})", flush=True)
