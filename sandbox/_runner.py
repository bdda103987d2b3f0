"""The program that runs INSIDE the sandbox: reads a job from stdin, scores it, writes decisions to stdout.

Started by the launcher as ``python -I -S -B /sandbox/runner.py --as UID:GID|- [--probe] SITE_DIR...`` under
bubblewrap; it must stay self-contained (stdlib + numpy + pyarrow + onnxruntime, no import of the `sandbox`
package).

First action, before any import beyond the stdlib's core and before one byte of input is read: become the
sandbox user. With ``--as UID:GID`` (the server is root, bwrap left this process only CAP_SETUID, CAP_SETGID
and CAP_SETPCAP) it empties the capability bounding set, drops every supplementary group and sets all uids
and gids; with ``--as -`` (a user namespace already maps it onto the unprivileged server uid) it changes
nothing. Either way it then verifies: no uid or gid is 0, no capability in any set (effective, permitted,
inheritable, ambient, and with ``--as`` the bounding set), no_new_privs set; otherwise it exits with status
97 before doing anything else. ``--probe`` then imports the runtime and exits 0: the launcher's check that
the sandbox starts and the sandbox user can load numpy, pyarrow and onnxruntime.

stdin:  4-byte big-endian header length, the JSON header, ``header["model_len"]`` model bytes, then (for
        scoring jobs) an Arrow IPC stream of feature batches: a ``pseudonym`` column plus the features.
stdout: for ``inspect``, one JSON document describing the ONNX signature; for ``onnx``/``python``, an
        Arrow IPC stream of (pseudonym, decision) batches.
serve:  (warm sandboxes, ONNX only, see `_serve`) after the model, length-prefixed request frames on stdin,
        ``READY`` then one answer frame per request on stdout, until stdin ends.
stderr: free text for the operator's logs; on failure the LAST line is ``SANDBOX-ERROR {"code": ...}``
        with a code from a fixed vocabulary (the parent never shows model-chosen text as the reason).

The rlimits from the header are applied (soft = hard, irreversible) before the model bytes are even read,
so no partner-controlled byte is touched without them.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import struct
import sys
from typing import Any

ERROR_PREFIX = "SANDBOX-ERROR "
STATS_PREFIX = "SANDBOX-STATS "
HEADER_STRUCT = ">I"
MAX_HEADER_BYTES = 1 << 20
IDENTITY_FAILED = 97
SERVE_READY = b"READY"

_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_GET_NO_NEW_PRIVS = 39
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_IS_SET = 1
_CAP_VERSION_3 = 0x20080522
_EINVAL = 22


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _capabilities(libc: Any) -> list[int]:
    """capget(2) for this thread: [effective, permitted, inheritable] as 64-bit masks."""
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    return [data[i] | (data[i + 3] << 32) for i in range(3)]


def _clear_capabilities(libc: Any) -> None:
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    if libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _cap_range(libc: Any, option: int) -> list[int]:
    """The capabilities (0..63) for which prctl(option, cap) answers 1; stops at the first unknown cap."""
    found = []
    for cap in range(64):
        answer = (
            libc.prctl(option, cap, 0, 0, 0)
            if option != _PR_CAP_AMBIENT
            else libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_IS_SET, cap, 0, 0)
        )
        if answer < 0:
            if ctypes.get_errno() == _EINVAL:
                break
            raise OSError(ctypes.get_errno(), "prctl")
        if answer:
            found.append(cap)
    return found


def become_sandbox_user(spec: str) -> None:
    """Drop to ``UID:GID`` (``-``: stay) and verify no trace of privilege is left, or exit 97."""
    libc = _libc()
    try:
        if spec != "-":
            uid, gid = (int(part) for part in spec.split(":"))
            if uid <= 0 or gid <= 0:
                raise ValueError("refusing to run as root")
            for cap in range(64):  # needs CAP_SETPCAP, which goes with the rest at setresuid
                if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    if ctypes.get_errno() == _EINVAL:
                        break
                    raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)  # clears the permitted, effective and ambient sets
            _clear_capabilities(libc)  # and the inheritable set (bwrap fills it), which setresuid keeps
            # A change of credentials clears the parent-death signal bwrap set (--die-with-parent).
            if libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "PR_SET_PDEATHSIG")
            if os.getgroups():
                raise ValueError(f"supplementary groups left: {os.getgroups()}")
            if set(os.getresuid()) != {uid} or set(os.getresgid()) != {gid}:
                raise ValueError(f"ids are {os.getresuid()} / {os.getresgid()}")
            if _cap_range(libc, _PR_CAPBSET_READ):
                raise ValueError("capability bounding set not empty")
        if 0 in os.getresuid() or 0 in os.getresgid():
            raise ValueError(f"running as uid/gid 0: {os.getresuid()} / {os.getresgid()}")
        if any(_capabilities(libc)) or _cap_range(libc, _PR_CAP_AMBIENT):
            raise ValueError("capabilities left")
        if libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
            raise ValueError("no_new_privs is not set")
    except (OSError, ValueError) as exc:
        os.write(2, f"sandbox identity check failed: {exc}\n".encode())
        os._exit(IDENTITY_FAILED)


class RunnerError(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def _read_exact(stream: Any, n: int) -> bytes:
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise RunnerError("protocol", "stdin ended early")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _apply_limits(limits: dict[str, int]) -> None:
    names = {
        "cpu": resource.RLIMIT_CPU,
        "as": resource.RLIMIT_AS,
        "nproc": resource.RLIMIT_NPROC,
        "fsize": resource.RLIMIT_FSIZE,
        "nofile": resource.RLIMIT_NOFILE,
        "core": resource.RLIMIT_CORE,
    }
    for key, value in limits.items():
        if key == "cpu":
            # SIGXCPU at the soft limit, SIGKILL one second later if it is caught.
            resource.setrlimit(names[key], (value, value + 1))
        else:
            resource.setrlimit(names[key], (value, value))


def _fail(code: str, detail: str = "") -> None:
    line = ERROR_PREFIX + json.dumps({"code": code, "detail": detail[:500]}) + "\n"
    os.write(2, line.encode("utf-8", "replace"))


def _onnx_session(model: bytes, threads: int) -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except MemoryError:
        raise
    except Exception as exc:  # onnxruntime raises its own untyped exceptions for any bad model
        if _is_alloc_failure(exc):
            raise MemoryError from exc
        raise RunnerError("bad_model", f"{type(exc).__name__}: {exc}") from exc


def _is_alloc_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "bad_alloc" in text or "bad allocation" in text or "failed to allocate" in text


def _signature(session: Any) -> dict[str, Any]:
    def describe(args: Any) -> list[dict[str, Any]]:
        return [
            {"name": a.name, "type": a.type, "shape": [d if isinstance(d, int) else None for d in a.shape]}
            for a in args
        ]

    return {"inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs())}


def _feature_matrix(batch: Any, feature_names: list[str]) -> Any:
    import numpy as np

    matrix = np.empty((batch.num_rows, len(feature_names)), dtype=np.float32)
    for j, name in enumerate(feature_names):
        column = batch.column(name)
        if column.null_count:
            # Imported only for a batch with nulls: pyarrow.compute costs about 40 ms of a cold start.
            import pyarrow.compute as pc

            column = pc.fill_null(column.cast("float64"), float("nan"))
        matrix[:, j] = column.to_numpy(zero_copy_only=False)
    return matrix


def _labels_at(labels: list[str], index: Any) -> Any:
    """``labels[index]`` as a string array. Not ``pa.array`` of a numpy array: its first call imports
    numpy.ma (about 9 ms of a cold start); the list costs about 9 ns more per row."""
    import numpy as np
    import pyarrow as pa

    return pa.array(np.asarray(labels, dtype=object)[index].tolist(), type=pa.string())


def _decisions_from_onnx(outputs: dict[str, Any], schema: dict[str, Any], n: int) -> Any:
    import numpy as np
    import pyarrow as pa

    labels: list[str] | None = schema.get("labels")
    if labels is not None:
        if "label" in outputs:
            raw = np.asarray(outputs["label"]).reshape(-1)
            if raw.shape[0] != n:
                raise RunnerError("output_shape", f"label output has {raw.shape[0]} rows for {n} inputs")
            if raw.dtype.kind in "iu":
                if raw.size and (raw.min() < 0 or raw.max() >= len(labels)):
                    raise RunnerError("output_shape", "label index out of range of the schema's labels")
                return _labels_at(labels, raw)
            return pa.array([str(x) for x in raw], type=pa.string())
        score = np.asarray(outputs["score"], dtype=np.float64)
        if score.ndim == 2 and score.shape[1] == len(labels) and len(labels) > 1:
            index = score.argmax(axis=1)
        elif len(labels) == 2 and (score.ndim == 1 or (score.ndim == 2 and score.shape[1] == 1)):
            index = (score.reshape(-1) >= 0.5).astype(np.int64)
        else:
            raise RunnerError("output_shape", f"score output of shape {score.shape} for {len(labels)} labels")
        if index.shape[0] != n:
            raise RunnerError("output_shape", f"score output has {index.shape[0]} rows for {n} inputs")
        return _labels_at(labels, index)
    score = np.asarray(outputs["score"], dtype=np.float64)
    if not (score.ndim == 1 or (score.ndim == 2 and score.shape[1] == 1)) or score.shape[0] != n:
        raise RunnerError("output_shape", f"score output of shape {score.shape} for {n} inputs")
    values = np.ascontiguousarray(score.reshape(-1))  # wrapped, not converted (see `_labels_at`)
    return pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values)])


def _load_python_module(source: bytes) -> Any:
    namespace: dict[str, Any] = {"__name__": "partner_model", "__builtins__": __builtins__}
    try:
        code = compile(source, "partner_model.py", "exec")
    except (SyntaxError, ValueError) as exc:
        raise RunnerError("bad_model", f"python module does not compile: {exc}") from exc
    exec(code, namespace)  # noqa: S102 - this IS the sandboxed execution of a steward-approved module
    score = namespace.get("score")
    if not callable(score):
        raise RunnerError("no_score_function", "python module defines no score(table) function")
    return score


def _score_jobs(header: dict[str, Any], model: bytes, stdin: Any, out: Any) -> None:
    import numpy as np
    import pyarrow as pa
    from pyarrow import ipc

    schema = header["schema"]
    feature_names: list[str] = header["feature_names"]
    decision_type = pa.string() if schema.get("labels") is not None else pa.float64()
    out_schema = pa.schema([("pseudonym", pa.string()), ("decision", decision_type)])

    if header["kind"] == "onnx":
        session, input_name, wanted = _onnx_scorer(header, model)
        scorer: Any = None
    else:
        scorer = _load_python_module(model)

    reader = ipc.open_stream(stdin)
    with ipc.new_stream(out, out_schema) as writer:
        for batch in reader:
            n = batch.num_rows
            if scorer is None:
                matrix = _feature_matrix(batch, feature_names)
                try:
                    values = session.run(wanted, {input_name: matrix})
                except Exception as exc:  # onnxruntime's errors are untyped
                    if isinstance(exc, MemoryError) or _is_alloc_failure(exc):
                        raise MemoryError from exc
                    raise RunnerError("input_mismatch", f"{type(exc).__name__}: {exc}") from exc
                decisions = _decisions_from_onnx(dict(zip(wanted, values, strict=True)), schema, n)
            else:
                try:
                    result = scorer(pa.Table.from_batches([batch]))
                except (MemoryError, RunnerError):
                    raise
                except Exception as exc:  # the partner's code may raise anything
                    raise RunnerError("model_error", f"score() raised {type(exc).__name__}: {exc}") from exc
                try:
                    decisions = pa.array(
                        np.asarray(result) if not isinstance(result, pa.Array | list) else result,
                        type=decision_type,
                    )
                except (pa.ArrowException, ValueError, TypeError) as exc:
                    raise RunnerError("output_shape", f"score() returned unusable values: {exc}") from exc
                if len(decisions) != n:
                    raise RunnerError("output_shape", f"score() returned {len(decisions)} values for {n} rows")
            pseudonyms = batch.column("pseudonym")
            if pseudonyms.type != pa.string():  # a cast imports pyarrow.compute: only for large_string
                pseudonyms = pseudonyms.cast(pa.string())
            writer.write_batch(pa.record_batch([pseudonyms, decisions], schema=out_schema))


def _onnx_scorer(header: dict[str, Any], model: bytes) -> tuple[Any, str, list[str]]:
    """The ONNX session of a scoring job, its input name and the outputs it reads (checked as for jobs)."""
    schema = header["schema"]
    feature_names: list[str] = header["feature_names"]
    session = _onnx_session(model, int(header.get("threads", 1)))
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 2:
        raise RunnerError("input_mismatch", "the model must take one float tensor 'features' [N, F]")
    width = inputs[0].shape[1]
    if isinstance(width, int) and width != len(feature_names):
        raise RunnerError("input_mismatch", f"model takes {width} features, job has {len(feature_names)}")
    wanted = [o.name for o in session.get_outputs() if o.name in {"label", "score"}]
    if schema.get("labels") is None and "score" not in wanted:
        raise RunnerError("output_shape", "a number decision schema needs a 'score' output")
    if not wanted:
        raise RunnerError("output_shape", "model has neither a 'label' nor a 'score' output")
    return session, inputs[0].name, wanted


def _write_frame(out: Any, payload: bytes) -> None:
    out.write(struct.pack(HEADER_STRUCT, len(payload)) + payload)
    out.flush()


def _serve(header: dict[str, Any], model: bytes, stdin: Any, out: Any) -> None:
    """Warm mode (``kind: serve``, ONNX only): build the session once, answer ``READY``, then score one
    request frame at a time until stdin ends.

    Request frame: 4-byte big-endian length + JSON ``{"p": pseudonym, "x": [feature or null, ...]}``.
    Answer frame: 4-byte length + JSON ``{"p": pseudonym, "d": decision}``. Any error ends the process
    (``SANDBOX-ERROR`` on stderr): the parent discards the whole sandbox, never reuses a failed one.
    """
    import numpy as np

    schema = header["schema"]
    width = len(header["feature_names"])
    session, input_name, wanted = _onnx_scorer(header, model)
    _write_frame(out, SERVE_READY)
    while True:
        head = stdin.read(4)
        if not head:
            return  # the parent closed the pipe: a clean end
        if len(head) < 4:
            head += _read_exact(stdin, 4 - len(head))
        (length,) = struct.unpack(HEADER_STRUCT, head)
        if length > MAX_HEADER_BYTES:
            raise RunnerError("protocol", "request frame too large")
        try:
            request = json.loads(_read_exact(stdin, length))
            pseudonym = str(request["p"])
            values = [np.nan if v is None else float(v) for v in request["x"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RunnerError("protocol", f"bad request frame: {exc}") from exc
        if len(values) != width:
            raise RunnerError("protocol", f"request has {len(values)} features, expected {width}")
        matrix = np.asarray([values], dtype=np.float32)
        try:
            outputs = session.run(wanted, {input_name: matrix})
        except Exception as exc:  # onnxruntime's errors are untyped
            if isinstance(exc, MemoryError) or _is_alloc_failure(exc):
                raise MemoryError from exc
            raise RunnerError("input_mismatch", f"{type(exc).__name__}: {exc}") from exc
        decision = _decisions_from_onnx(dict(zip(wanted, outputs, strict=True)), schema, 1)[0].as_py()
        _write_frame(out, json.dumps({"p": pseudonym, "d": decision}).encode())


def main(argv: list[str]) -> int:
    args = argv[1:]
    if args[:1] != ["--as"] or len(args) < 2:
        os.write(2, b"usage: runner.py --as UID:GID|- [--probe] SITE_DIR...\n")
        return IDENTITY_FAILED
    become_sandbox_user(args[1])
    # RLIMIT_NPROC counts every process of the real uid on the host: for the shared sandbox user (server
    # is root) one sandbox's threads would starve every concurrent one. Seccomp forbids fork and
    # RLIMIT_AS bounds threads; under a user namespace the limit is applied as before.
    shared_uid = args[1] != "-"
    args = args[2:]
    probe = args[:1] == ["--probe"]
    # Trusted start: import the runtime before any partner byte is read.
    sys.path.extend(args[1:] if probe else args)
    if probe:  # the sandbox user can read and load the whole runtime
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
        import pyarrow  # noqa: F401

        return 0
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)

    # Anything the partner's code prints goes to stderr; the result channel is a private copy of fd 1.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out = os.fdopen(out_fd, "wb", buffering=1 << 16)
    stdin = os.fdopen(0, "rb", buffering=1 << 16)
    try:
        (length,) = struct.unpack(HEADER_STRUCT, _read_exact(stdin, 4))
        if length > MAX_HEADER_BYTES:
            raise RunnerError("protocol", "header too large")
        header = json.loads(_read_exact(stdin, length))
        _apply_limits({k: v for k, v in header["rlimits"].items() if not (shared_uid and k == "nproc")})
        model = _read_exact(stdin, int(header["model_len"]))
        if header["kind"] == "inspect":
            signature = _signature(_onnx_session(model, 1))
            out.write(json.dumps(signature).encode())
        elif header["kind"] in {"onnx", "python"}:
            _score_jobs(header, model, stdin, out)
        elif header["kind"] == "serve":
            _serve(header, model, stdin, out)
        else:
            raise RunnerError("protocol", f"unknown job kind {header['kind']!r}")
        out.flush()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = {"cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_bytes": usage.ru_maxrss * 1024}
        os.write(2, (STATS_PREFIX + json.dumps(stats) + "\n").encode())
    except MemoryError:
        _fail("memory")
        return 3
    except RunnerError as exc:
        _fail(exc.code, exc.detail)
        return 2
    except pa.ArrowInvalid as exc:
        _fail("protocol", f"bad feature stream: {exc}")
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: report a code, never hang
        _fail("internal", f"{type(exc).__name__}: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    status = main(sys.argv)
    # Everything the parent reads has been written: skip the interpreter's teardown (the runtimes'
    # destructors take about 30 ms with onnxruntime loaded), after flushing what partner code printed.
    try:
        sys.stderr.flush()
    finally:
        os._exit(status)
