"""TensorFlow Serving's REST formats: predict request decoding, response encoding, errors.

Request bodies (``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict``)::

    {"signature_name": "serving_default", "instances": [<instance>, ...]}   # row format
    {"signature_name": "serving_default", "inputs": <tensor> | {"<input>": <tensor>, ...}}  # columnar

Responses: ``{"predictions": [...]}`` for the row format (one value per instance, or one object per
instance when the signature has several outputs) and ``{"outputs": ...}`` for the columnar format.
Errors: ``{"error": "<message>"}`` with TF Serving's HTTP status for the status code (400 for
INVALID_ARGUMENT / FAILED_PRECONDITION, 404 for NOT_FOUND, ...).

Values must be finite numbers: strings, booleans, nulls, NaN and infinities are rejected with 400 and
a message naming the input, the instance and the position.

Large bodies take a fast path: the tensor's bracket structure is checked against the signature's shape
in one pass, and the numbers are parsed as one flat JSON array (so the parser still validates every
number); anything unusual falls back to the general path, which gives the detailed error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving.runtime import Servable, Signature, TensorInfo

DEFAULT_SIGNATURE = "serving_default"
FAST_PATH_MIN_BYTES = 32 * 1024


class ServingError(Exception):
    """An error returned to the client as ``{"error": message}`` with an HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ServingError:
    return ServingError(400, message)


@dataclass
class PredictRequest:
    signature: Signature
    columnar: bool
    inputs: dict[str, np.ndarray]
    rows: int


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


# ------------------------------------------------------------------------------------------ decoding
def _shape_text(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "any shape"
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"


def _find_bool(value: Any, path: tuple[int, ...] = ()) -> tuple[int, ...] | None:
    if isinstance(value, bool):
        return path
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_bool(v, (*path, i))
            if found is not None:
                return found
    return None


def _find_bad_leaf(value: Any, path: tuple[int, ...] = ()) -> tuple[tuple[int, ...], Any] | None:
    """The first leaf that is not a number (for the error message)."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_bad_leaf(v, (*path, i))
            if found is not None:
                return found
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return path, value
    return None


def _pos(where: str, index: tuple[int, ...]) -> str:
    return where + "".join(f"[{i}]" for i in index)


def to_array(value: Any, info: TensorInfo, where: str, *, batched: bool, has_bools: bool) -> np.ndarray:
    """Convert a JSON value to the input's dtype and check its shape; 400 naming the place otherwise."""
    if has_bools:
        found = _find_bool(value)
        if found is not None:
            raise bad_request(f"{_pos(where, found)}: booleans are not accepted for {info.name!r}; send numbers")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise bad_request(
            f"{where}: the values do not form a rectangular array of shape {_shape_text(info.shape)} "
            f"(lists of different lengths, or lists mixed with numbers): {exc}"
        ) from None
    if arr.dtype.kind not in "iuf":
        bad = _find_bad_leaf(value)
        if bad is not None:
            index, leaf = bad
            kind = "null" if leaf is None else type(leaf).__name__
            shown = orjson.dumps(leaf).decode()[:40] if not isinstance(leaf, int) else str(leaf)
            if isinstance(leaf, int):
                raise bad_request(f"{_pos(where, index)}: integer {shown} is out of range for {info.name!r}")
            raise bad_request(
                f"{_pos(where, index)}: expected a number for {info.name!r}, got {kind} {shown}"
            )
        raise bad_request(f"{where}: values of {info.name!r} must be numbers")
    expected = info.shape
    if expected is not None:
        want = expected if batched else expected[1:]
        if arr.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, arr.shape, strict=False)):
            raise bad_request(
                f"{where}: expected shape {_shape_text(want)} for input {info.name!r}, got "
                f"{_shape_text(arr.shape)}"
            )
    if out_kind_mismatch(arr, info):
        raise bad_request(f"{where}: input {info.name!r} takes integers, got decimals")
    if too_large_for(arr, info.dtype):
        index = tuple(int(i) for i in np.argwhere(~(np.abs(arr) <= np.finfo(info.dtype).max))[0])
        raise bad_request(f"{_pos(where, index)}: value {arr[index]!r} is beyond the {info.dtype.name} range")
    out = arr.astype(info.dtype, copy=False)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(out))[0])
        raise bad_request(
            f"{_pos(where, index)}: value {arr[index]!r} is not a finite {info.dtype.name} number"
        )
    return out


def too_large_for(arr: np.ndarray, dtype: np.dtype) -> bool:
    """Would casting overflow to infinity (float64 JSON numbers into a float32 input)?"""
    return (arr.dtype.kind == "f" and dtype.kind == "f" and arr.dtype.itemsize > dtype.itemsize and arr.size > 0
            and not bool((np.abs(arr) <= np.finfo(dtype).max).all()))


def out_kind_mismatch(arr: np.ndarray, info: TensorInfo) -> bool:
    return info.dtype.kind in "iu" and arr.dtype.kind == "f"


def _skeleton(shape: tuple[int, ...]) -> bytes:
    """The brackets and commas of one instance of the given (fully known) shape, without numbers."""
    if not shape:
        return b""
    inner = _skeleton(shape[1:])
    return b"[" + b",".join([inner] * shape[0]) + b"]"


_FAST_BODY = re.compile(
    rb'\s*\{\s*(?:"signature_name"\s*:\s*"(?P<s1>[A-Za-z0-9_.\-]*)"\s*,\s*)?"(?P<key>instances|inputs)"\s*:\s*'
    rb"(?=\[)"
)
_FAST_TAIL = re.compile(rb'\s*(?:,\s*"signature_name"\s*:\s*"(?P<s2>[A-Za-z0-9_.\-]*)"\s*)?\}\s*\Z')


def _fast_parse(body: bytes, servable: Servable) -> PredictRequest | None:
    """Large single-input requests: structure check + flat number parse; None means 'use the slow path'."""
    head = _FAST_BODY.match(body)
    if head is None:
        return None
    end = body.rfind(b"]")
    tail = _FAST_TAIL.match(body, end + 1)
    if tail is None:
        return None
    sig_name = (head.group("s1") or tail.group("s2") or b"").decode() or DEFAULT_SIGNATURE
    if head.group("s1") is not None and tail.group("s2") is not None:
        return None
    sig = servable.signatures.get(sig_name)
    if sig is None or sig.single_input is None:
        return None
    info = sig.single_input
    if info.shape is None or not info.batchable or any(d is None for d in info.shape[1:]):
        return None
    array = body[head.end() : end + 1]
    # Anything but numbers, brackets and commas (strings, literals, objects) survives into the skeleton,
    # which then differs from the expected one: the slow path explains.
    compact = array.translate(None, b" \n\t\r") if any(w in array for w in (b" ", b"\n", b"\t", b"\r")) else array
    skeleton = compact.translate(None, b"0123456789.eE+-")
    unit = _skeleton(tuple(info.shape[1:]))
    n = (len(skeleton) - 1) // (len(unit) + 1) if unit else 0
    if n < 1 or skeleton != b"[" + b",".join([unit] * n) + b"]":
        return None
    try:
        flat = orjson.loads(b"[" + compact.translate(None, b"[]") + b"]")
    except orjson.JSONDecodeError:
        return None
    size = int(np.prod(info.shape[1:], dtype=np.int64))
    if len(flat) != n * size:
        return None
    try:
        arr = np.fromiter(flat, dtype=np.float64, count=len(flat))
    except (ValueError, TypeError, OverflowError):
        return None
    if too_large_for(arr, info.dtype):
        return None
    out = arr.astype(info.dtype, copy=False).reshape((n, *info.shape[1:]))
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        return None
    if out.dtype.kind in "iu" and not np.array_equal(out, arr.reshape(out.shape)):
        return None
    return PredictRequest(sig, head.group("key") == b"inputs", {info.name: out}, n)


def _quick_rows(doc: Any, body: bytes, servable: Servable) -> PredictRequest | None:
    """The common small request (``instances`` of numbers, one input) with the fewest steps; None: general path."""
    if type(doc) is not dict or len(doc) > 2:
        return None
    instances = doc.get("instances")
    if type(instances) is not list or not instances or type(instances[0]) is not list:
        return None
    sig_name = doc.get("signature_name", DEFAULT_SIGNATURE) if len(doc) == 2 else DEFAULT_SIGNATURE
    if len(doc) == 2 and ("signature_name" not in doc or type(sig_name) is not str):
        return None
    sig = servable.signatures.get(sig_name or DEFAULT_SIGNATURE)
    info = sig.single_input if sig is not None else None
    if info is None or info.shape is None or info.dtype.kind != "f" or b"true" in body or b"false" in body:
        return None
    try:
        arr = np.asarray(instances)
    except (ValueError, TypeError):
        return None
    if arr.dtype.kind not in "fi" or arr.shape[1:] != info.shape[1:] or None in info.shape[1:]:
        return None
    # NaN fails the comparison, inf and float32 overflow exceed the bound: all go to the general path.
    if not float(np.abs(arr).max()) <= float(np.finfo(info.dtype).max):
        return None
    return PredictRequest(sig, False, {info.name: arr.astype(info.dtype)}, len(arr))


def parse_predict(body: bytes, servable: Servable) -> PredictRequest:
    """Decode a predict body against the servable's signatures (raises ServingError 400)."""
    if len(body) >= FAST_PATH_MIN_BYTES:
        fast = _fast_parse(body, servable)
        if fast is not None:
            return fast
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"JSON Parse error: {exc}") from None
    quick = _quick_rows(doc, body, servable)
    if quick is not None:
        return quick
    if not isinstance(doc, dict):
        raise bad_request("JSON Parse error: the request body must be a JSON object with 'instances' or 'inputs'")
    sig_name = doc.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(sig_name, str):
        raise bad_request("'signature_name' must be a string")
    sig_name = sig_name or DEFAULT_SIGNATURE
    unknown = set(doc) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise bad_request(f"Unknown key(s) {sorted(unknown)}: expected 'instances' or 'inputs' and 'signature_name'")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise bad_request("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if not has_instances and not has_inputs:
        raise bad_request("Missing 'inputs' or 'instances' key")
    sig = servable.signatures.get(sig_name)
    if sig is None:
        raise bad_request(f'Serving signature name: "{sig_name}" not found in signature def')
    has_bools = b"true" in body or b"false" in body
    if has_instances:
        return _rows(doc["instances"], sig, has_bools)
    return _columns(doc["inputs"], sig, has_bools)


def _rows(instances: Any, sig: Signature, has_bools: bool) -> PredictRequest:
    if not isinstance(instances, list):
        raise bad_request("'instances' must be a list of instances")
    if not instances:
        raise bad_request("'instances' is empty: send at least one instance")
    names = list(sig.inputs)
    named = isinstance(instances[0], dict)
    if len(names) > 1 and not named:
        raise bad_request(f"each instance must be an object with the inputs {names}")
    if named:
        columns: dict[str, list] = {n: [] for n in names}
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict):
                raise bad_request(f"instances[{i}]: expected an object like instances[0], got {type(inst).__name__}")
            if set(inst) != set(names):
                raise bad_request(f"instances[{i}]: expected exactly the input(s) {names}, got {sorted(inst)}")
            for n in names:
                columns[n].append(inst[n])
    else:
        columns = {names[0]: instances}
    inputs = {
        n: to_array(columns[n], sig.inputs[n], "instances", batched=True, has_bools=has_bools) for n in names
    }
    return PredictRequest(sig, False, inputs, len(instances))


def _columns(value: Any, sig: Signature, has_bools: bool) -> PredictRequest:
    names = list(sig.inputs)
    if isinstance(value, dict):
        if set(value) != set(names):
            raise bad_request(f"'inputs' must name exactly the input(s) {names}, got {sorted(value)}")
        columns = value
    elif len(names) == 1:
        columns = {names[0]: value}
    else:
        raise bad_request(f"'inputs' must be an object with the inputs {names}")
    inputs = {}
    for n in names:
        where = "inputs" if not isinstance(value, dict) else f"inputs[{n!r}]"
        arr = to_array(columns[n], sig.inputs[n], where, batched=True, has_bools=has_bools)
        if arr.ndim and arr.shape[0] == 0:
            raise bad_request(f"{where}: empty batch: send at least one instance")
        inputs[n] = arr
    rows = next(iter(inputs.values())).shape[0] if inputs else 0
    return PredictRequest(sig, True, inputs, rows)


# ------------------------------------------------------------------------------------------ encoding
def encode_predict(req: PredictRequest, outputs: dict[str, np.ndarray]) -> bytes:
    opt = orjson.OPT_SERIALIZE_NUMPY
    names = req.signature.outputs
    if req.columnar:
        if len(names) == 1:
            return orjson.dumps({"outputs": np.ascontiguousarray(outputs[names[0]])}, option=opt)
        return orjson.dumps({"outputs": {k: np.ascontiguousarray(outputs[k]) for k in names}}, option=opt)
    if len(names) == 1:
        return orjson.dumps({"predictions": np.ascontiguousarray(outputs[names[0]])}, option=opt)
    rows = [{k: outputs[k][i] for k in names} for i in range(req.rows)]
    return orjson.dumps({"predictions": rows}, option=opt)
