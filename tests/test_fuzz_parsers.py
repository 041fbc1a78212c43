"""Seeded, bounded fuzzing of every parser of untrusted input (issue 6: hostile and broken input).

Each `check_*` target takes one generated input and holds the contract of `engine.errors`: the input
either loads correctly (and what loaded is sane: finite float32 tensors of one shape, a library that lists
it, a round trip that reproduces it) or it raises the project's own `ActAddError`. Any other exception, a
hang (an alarm fires after `HANG_S`) or a jump in peak memory fails the test, and hypothesis prints the
smallest input that does it.

The targets are fed two ways: mutations of valid files (bit flips, JSON-significant bytes, truncation,
insertion, deletion, hostile 64-bit lengths and counts) and structured generators that build nearly valid
files with one or more fields made hostile, so that the deep validation paths are reached too.

The suite runs each with a fixed seed (`derandomize=True`) and a few dozen to a few hundred examples,
seconds in all. `scripts/fuzz_long.py` runs the same targets and strategies with many more examples and
random seeds, and feeds the byte-level targets to atheris where it is installed.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import io
import json
import math
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
import threading
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.errors import ActAddError, ModelLoadError
from engine.fingerprint import ModelFingerprint
from engine.vector import METHODS, MODES, SteeringVector, load_vector, read_header, vector_to_bytes

HANG_S = 20  # one example taking this long is a hang
PEAK_RSS_GROWTH_MB = 400  # a fuzz test may not raise the process's peak memory by more than this

FP = ModelFingerprint("gpt2", 4, 3, "0123456789abcdef", "fuzz-model")
FP64 = ModelFingerprint("gpt2", 64, 3, "0123456789abcdef", "fuzz-model-64")


def fast(max_examples: int):
    """The suite's settings: fixed seed, bounded examples, no per-example deadline (2 shared cores)."""
    return settings(
        derandomize=True,
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---- plumbing ---------------------------------------------------------------------------------------------
_SCRATCH: list[Path] = []


def scratch(name: str = "") -> Path:
    """A per-process scratch folder (removed at exit); `name` is a fresh, empty sub-folder."""
    if not _SCRATCH:
        # tmpfs where there is one: fsync and rmtree on a real disk would dominate the run time
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="actadd-fuzz-", dir=base)))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    root = _SCRATCH[0]
    if not name:
        return root
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


class Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(seconds: float = HANG_S):
    """Turn a hang into a failure (main thread, POSIX); elsewhere just run."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum, frame):
        raise Hang(f"one input took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@pytest.fixture(autouse=True)
def _bounded_memory():
    before = peak_rss_mb()
    yield
    grown = peak_rss_mb() - before
    assert grown < PEAK_RSS_GROWTH_MB, f"peak memory grew by {grown:.0f} MB while fuzzing"


def clean(fn, *args, **kwargs):
    """`fn(...)`, or None when it raised the project's own error (with a message) instead."""
    with no_hang():
        try:
            return fn(*args, **kwargs)
        except ActAddError as exc:
            assert str(exc).strip(), f"{type(exc).__name__} without a message"
            assert "Traceback" not in str(exc)
            return None


def assert_sane_vector(vector: SteeringVector) -> None:
    shapes = {tuple(t.shape) for t in vector.layers.values()}
    assert len(shapes) == 1 and next(iter(shapes))[-1] > 0
    for t in vector.layers.values():
        assert t.dtype == torch.float32 and t.dim() in (1, 2) and bool(torch.isfinite(t).all())
    assert vector.method in METHODS and vector.default_mode in MODES and math.isfinite(vector.default_coeff)
    assert all(0 <= l <= 4096 for l in vector.layers)


# ---- seeds: small valid files -----------------------------------------------------------------------------
@functools.cache
def vector_seeds() -> tuple[bytes, ...]:
    positional = SteeringVector(
        layers={1: torch.arange(8, dtype=torch.float32).view(2, 4) / 8},
        fingerprint=FP,
        name="love",
        prompts={"positive": "Love", "negative": "Hate"},
        provenance={"pad_token": "Ġ"},
        tags=("mood",),
        notes="ünïcode ✓",
        default_coeff=4.0,
    )
    direction = SteeringVector(
        layers={0: torch.ones(4), 2: -torch.ones(4)}, method="mean-diff", default_mode="all"
    )
    return vector_to_bytes(positional), vector_to_bytes(direction)


def _control_vector_bytes(vector: SteeringVector, **options) -> bytes:
    from engine.interop.gguf import gguf_bytes

    return gguf_bytes(vector, **options)[0]


@functools.cache
def gguf_seeds() -> tuple[bytes, ...]:
    direction = SteeringVector(
        layers={2: torch.linspace(-1, 1, 4), 3: torch.ones(4)},
        method="pca",
        default_mode="all",
        fingerprint=FP,
        name="dir",
        tags=("t",),
    )
    return (
        _control_vector_bytes(direction),
        _control_vector_bytes(direction, layer_count_type="int32", model_hint="llama"),
    )


def bundle_bytes(entries: list[tuple[str, str, str, bytes]]) -> bytes:
    """A bundle of (member, name, collection, data), with a matching manifest."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, _, _, data in entries:
            archive.writestr(member, data)
        archive.writestr(
            "manifest.json",
            json.dumps(
                {
                    "format": "actadd-studio/bundle",
                    "format_version": 1,
                    "vectors": [
                        {"file": m, "name": n, "collection": c, "sha256": hashlib.sha256(d).hexdigest()}
                        for m, n, c, d in entries
                    ],
                }
            ),
        )
    return buffer.getvalue()


@functools.cache
def bundle_seeds() -> tuple[bytes, ...]:
    a, b = vector_seeds()
    return (
        bundle_bytes([("vectors/love.safetensors", "love", "", a)]),
        bundle_bytes(
            [("vectors/c/love.safetensors", "love", "c", a), ("vectors/dir.safetensors", "dir", "", b)]
        ),
    )


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


@functools.cache
def numpy_seeds() -> tuple[bytes, ...]:
    stack = np.zeros((3, 4), np.float32)
    stack[1] = 1.0
    return (
        _npy(stack),
        _npz({"1": np.ones(4, np.float32), "layer_2": np.full(4, 2.0, np.float64)}),
        _npz({"direction.0": np.ones((1, 4), np.float16)}, compressed=True),
    )


@functools.cache
def steering_vectors_seeds() -> tuple[bytes, ...]:
    from safetensors.torch import save

    return (
        save({"1": torch.ones(4), "layer_activations.2": torch.full((4,), 2.0, dtype=torch.float16)}),
        save({"0": torch.ones(4, dtype=torch.bfloat16)}, metadata={"layer_type": "decoder_block"}),
    )


# ---- mutations (any format) -------------------------------------------------------------------------------
HOSTILE_U64 = [0, 1, 2, 7, 8, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**64 - 1]
JSON_BYTES = b'{}[]",:0-9eE.\\ntfu\x00\x80\xff '


@st.composite
def mutated(draw, seeds) -> bytes:
    """A valid seed file with 1-4 mutations."""
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "json", "truncate", "insert", "delete", "u64", "u32", "dup"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "json":
            data[pos] = draw(st.sampled_from(JSON_BYTES))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=24))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 24))]
        elif kind == "u64":
            value = draw(st.sampled_from([*HOSTILE_U64, len(data), len(data) - 8]))
            data[pos : pos + 8] = struct.pack("<Q", value % 2**64)
        elif kind == "u32":
            data[pos : pos + 4] = struct.pack("<I", draw(st.sampled_from(HOSTILE_U64)) % 2**32)
        elif kind == "dup":
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


# ---- vector .safetensors -------------------------------------------------------------------------------
SPECIAL_INTS = [0, 1, 2, 3, 4, -1, -4, 2**31, 2**32 + 4, 2**53, 2**63 - 1, 2**64, 2**70]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(SPECIAL_INTS),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.lists(st.sampled_from([*SPECIAL_INTS, True, 1.5, "2", None]), max_size=4),
    st.builds(lambda: {"dtype": "F32"}),
    st.just("[" * 3000),  # deeply nested JSON
)
METADATA_VALUES = {
    "format": ["actadd-studio/vector", "pt", "", "\udcff"],
    "format_version": ["1", "2", "x"],
    "name": ["love", "", "../x", "a/b", "x" * 300, "\x00", "名前"],
    "method": [*METHODS, "evil", ""],
    "default_coeff": ["1.0", "-4", "nan", "inf", "-inf", "1e309", "x", "", "0x10"],
    "default_mode": [*MODES, "sideways", ""],
    "prompts": ['{"positive": "a", "negative": "b"}', "{}", "[]", '"x"', "{", "[" * 5000, "null"],
    "fingerprint": [
        FP.to_json(),
        "",
        "{}",
        '{"architecture": 1}',
        "[]",
        "null",
        '{"architecture": "gpt2", "hidden_size": -1, "n_layers": 0, "vocab_hash": ""}',
        '{"architecture": "gpt2", "hidden_size": "4", "n_layers": 3, "vocab_hash": "x", "model_hint": 5}',
    ],
    "provenance": ["{}", "[]", "1", '{"a": [1, {"b": null}]}', "{" * 50],
    "tags": ['["a", "b"]', "[]", "[1]", '"a"', "{}", "nope"],
    "notes": ["", "x" * 1000, "\x1b[31mred"],
    "created": ["2024-01-01T00:00:00+00:00", "", "yesterday"],
}


@st.composite
def metadata_dicts(draw) -> dict:
    keys = draw(st.lists(st.sampled_from(sorted(METADATA_VALUES)), unique=True, max_size=8))
    meta = {k: draw(st.one_of(st.sampled_from(METADATA_VALUES[k]), st.text(max_size=10))) for k in keys}
    if draw(st.integers(0, 9)) == 0:
        meta[draw(st.text(max_size=8))] = draw(JUNK)  # a non-string value: malformed metadata
    return meta


def _json_bytes(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def safetensors_files(draw) -> bytes:
    """A nearly valid vector file (or steering-vectors file) with 0-3 fields made hostile."""
    rows = draw(st.sampled_from([None, 1, 2]))
    hidden = draw(st.integers(1, 4))
    shape = [hidden] if rows is None else [rows, hidden]
    header: dict = {}
    payload = b""
    key_format = draw(st.sampled_from(["layers.{}", "layers.{}", "{}", "layer_activations.{}"]))
    for _ in range(draw(st.integers(0, 3))):
        layer = draw(st.one_of(st.integers(0, 5), st.sampled_from([4095, 4096, 4097, 10**6])))
        floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
        values = draw(
            st.lists(
                st.one_of(st.floats(-3, 3, width=32), floats),
                min_size=math.prod(shape),
                max_size=math.prod(shape),
            )
        )
        blob = struct.pack(f"<{len(values)}f", *values)
        header[key_format.format(layer)] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [len(payload), len(payload) + len(blob)],
        }
        payload += blob
    metadata = draw(metadata_dicts())
    if metadata or draw(st.booleans()):
        header["__metadata__"] = metadata
    for _ in range(draw(st.integers(0, 3))):
        tensor_keys = [k for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
        what = draw(st.sampled_from(["dtype", "shape", "offsets", "key", "entry", "drop", "dup", "meta"]))
        if what == "meta":
            header["__metadata__"] = draw(JUNK)
            continue
        if not tensor_keys:
            break
        key = draw(st.sampled_from(tensor_keys))
        if what == "dtype":
            header[key]["dtype"] = draw(
                st.sampled_from(["F64", "F16", "BF16", "I8", "U8", "BOOL", "f32", "", 5, ["F32"], {}])
            )
        elif what == "shape":
            header[key]["shape"] = draw(JUNK)
        elif what == "offsets":
            header[key]["data_offsets"] = draw(
                st.one_of(
                    JUNK,
                    st.lists(st.sampled_from([*SPECIAL_INTS, len(payload), len(payload) + 4]), max_size=3),
                )
            )
        elif what == "key":
            new = draw(
                st.sampled_from(
                    [
                        "layers.1\n",
                        "layers.01",
                        "layers.-1",
                        "layers.4097",
                        "layers.",
                        "model.weight",
                        "",
                        "layers.1 ",
                    ]
                )
            )
            header[new] = header.pop(key)
        elif what == "entry":
            header[key] = draw(JUNK)
        elif what == "drop":
            header[key].pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])), None)
        elif what == "dup":
            header[key + "\n"] = dict(header[key])
    blob = _json_bytes(header)
    if draw(st.integers(0, 15)) == 0:  # a header that is not a JSON object at all
        blob = draw(
            st.sampled_from([b"[" * 5000, b'{"a":' * 3000, b"\xff\xfe{}", b"null", b"[]", b"{", b"1e999"])
        )
    padding = draw(st.sampled_from([0, 0, 0, 1, 3, 8]))
    blob += b" " * padding
    tail = draw(st.sampled_from([b"", b"", b"\x00" * 4, b"junk"]))
    return struct.pack("<Q", len(blob)) + blob + payload + tail


def check_vector_file(data: bytes) -> None:
    """The vector reader, the library listing and a save/load round trip on one file."""
    from engine.library import Library

    folder = scratch("vector")
    path = folder / "fuzz.safetensors"
    path.write_bytes(data)
    header = clean(read_header, path)
    vector = clean(load_vector, path)
    if vector is not None:
        assert header is not None, "load_vector accepted a file whose header read_header refused"
        assert_sane_vector(vector)
        assert sorted(vector.layers) == header.layer_ids
        assert all(list(t.shape) == header.shapes[l] for l, t in vector.layers.items())
        again = folder / "again.safetensors"
        again.write_bytes(vector_to_bytes(vector))
        back = load_vector(again)
        assert all(torch.equal(back.layers[l], t) for l, t in vector.layers.items())
        again.unlink()
    listing = clean(Library(folder).list)
    assert listing is not None, "listing a library must never fail because of one file"
    listed = [e.path.name for e in listing.entries] + [b.path.name for b in listing.bad_files]
    assert listed == ["fuzz.safetensors"]
    if header is None:
        assert listing.entries == []


@fast(200)
@given(mutated(vector_seeds))
def test_vector_reader_on_mutated_files(data):
    check_vector_file(data)


@fast(200)
@given(safetensors_files())
def test_vector_reader_on_hostile_headers(data):
    check_vector_file(data)


# ---- steering-vectors and repeng imports ------------------------------------------------------------------
def check_steering_vectors(data: bytes) -> None:
    from engine.interop import detect_format
    from engine.interop.repeng import read_steering_vectors

    path = scratch("sv") / "fuzz.safetensors"
    path.write_bytes(data)
    assert clean(detect_format, path) in ("vector", "steering-vectors")
    for model in (None, FP):
        result = clean(read_steering_vectors, path, model=model)
        if result is not None:
            vector, warnings_ = result
            assert_sane_vector(vector)
            assert all(isinstance(w, str) for w in warnings_)


@fast(100)
@given(st.one_of(mutated(steering_vectors_seeds), safetensors_files()))
def test_steering_vectors_import(data):
    check_steering_vectors(data)


@st.composite
def numpy_files(draw) -> bytes:
    dtype = draw(
        st.sampled_from([np.float32, np.float64, np.float16, np.int8, np.int32, np.complex64, np.bool_])
    )
    shape = draw(st.sampled_from([(4,), (1, 4), (2, 4), (3, 4), (2, 2, 4), (0, 4), (2, 0), (), (4, 1)]))
    fill = draw(st.sampled_from([0.0, 1.0, -2.5, np.nan, np.inf, 1e39]))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = np.full(shape, fill).astype(dtype)
    if array.size and draw(st.booleans()):
        array.flat[0] = 0
    if draw(st.booleans()):
        return _npy(array)
    keys = draw(
        st.lists(
            st.sampled_from(
                ["0", "1", "12", "layer_3", "layer.4", "layers.5", "direction.6", "4096", "x", "01", ""]
            ),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    return _npz({k: array for k in keys}, compressed=draw(st.booleans()))


def check_repeng(data: bytes, suffix: str) -> None:
    from engine.interop.repeng import read_repeng

    path = scratch("repeng") / f"fuzz{suffix}"
    path.write_bytes(data)
    for model in (None, FP):
        result = clean(read_repeng, path, model=model)
        if result is not None:
            assert_sane_vector(result[0])


@fast(100)
@given(st.one_of(mutated(numpy_seeds), numpy_files()), st.sampled_from([".npy", ".npz"]))
def test_repeng_import(data, suffix):
    check_repeng(data, suffix)


# ---- GGUF control vectors -------------------------------------------------------------------------------
GGUF_NAMES = [
    "direction.1",
    "direction.2",
    "direction.3",
    "direction.0",
    "direction.01",
    "direction.-1",
    "direction.4095",
    "direction.4096",
    "direction.999999",
    "direction.1000000",
    "direction.1\n",
    "token_embd.weight",
    "",
]


@st.composite
def gguf_files(draw) -> bytes:
    """A control vector written with gguf's own writer, with hostile keys, types, names and values."""
    import gguf

    from engine.interop.gguf import KEY_LAYER_COUNT, KEY_MODEL_HINT, KEY_OURS

    path = scratch("gguf-build") / "build.gguf"
    hidden = draw(st.integers(1, 6))
    writer = gguf.GGUFWriter(path, draw(st.sampled_from(["controlvector", "controlvector", "llama", ""])))
    try:
        hint = draw(st.sampled_from([None, "str", "int", "array"]))
        if hint == "str":
            writer.add_string(KEY_MODEL_HINT, draw(st.sampled_from(["llama", "", "x" * 500, "名前"])))
        elif hint == "int":
            writer.add_uint32(KEY_MODEL_HINT, 7)
        elif hint == "array":
            writer.add_array(KEY_MODEL_HINT, ["a", "b"])
        count = draw(st.sampled_from([None, 0, 1, 2, 3, 4096, 4097, 2**31 - 1]))
        count_type = draw(st.sampled_from(["uint32", "int32", "uint8", "int64", "float32", "string"]))
        if count is not None:
            if count_type == "uint8":
                writer.add_uint8(KEY_LAYER_COUNT, count % 256)
            elif count_type == "int64":
                writer.add_int64(KEY_LAYER_COUNT, -count)
            elif count_type == "float32":
                writer.add_float32(KEY_LAYER_COUNT, float(count))
            elif count_type == "string":
                writer.add_string(KEY_LAYER_COUNT, str(count))
            else:
                getattr(writer, f"add_{count_type}")(KEY_LAYER_COUNT, count)
        names = draw(st.lists(st.sampled_from(GGUF_NAMES), max_size=4, unique=True))
        ours = draw(st.sampled_from([None, "valid", "junk", "deep", "huge", "wrong-layers", "int"]))
        if ours == "valid" or ours == "wrong-layers":
            layers = sorted(
                int(n.split(".")[1]) + 1 for n in names if n.startswith("direction.") and n[10:].isdigit()
            )
            if ours == "wrong-layers":
                layers = [*layers, 99]
            record = {
                "name": draw(st.sampled_from(["x", "", "../x"])),
                "method": draw(st.sampled_from(["pca", "actadd", "evil"])),
                "default_coeff": draw(st.sampled_from([1.5, float("nan"), "2", None])),
                "default_mode": draw(st.sampled_from(["all", "front", "nope"])),
                "fingerprint": draw(
                    st.sampled_from([json.loads(FP.to_json()), None, {"architecture": 1}, []])
                ),
                "prompts": draw(st.sampled_from([{}, [], {"a": "b"}])),
                "provenance": draw(st.sampled_from([{}, [], {"x": 1}])),
                "tags": draw(st.sampled_from([["a"], [1], "a"])),
                "notes": draw(st.sampled_from(["", 5])),
                "layers": layers,
            }
            writer.add_string(KEY_OURS, json.dumps(record, allow_nan=True))
        elif ours == "junk":
            writer.add_string(KEY_OURS, draw(st.sampled_from(["{", "[]", "null", "1", '{"layers": 5}'])))
        elif ours == "deep":
            writer.add_string(KEY_OURS, "[" * 5000)
        elif ours == "huge":
            writer.add_string(KEY_OURS, "x" * (1024**2 + 1))
        elif ours == "int":
            writer.add_uint32(KEY_OURS, 1)
        for name in names:
            dtype = draw(st.sampled_from([np.float32, np.float32, np.float16, np.float64, np.int8, np.int32]))
            tensor_shape = draw(
                st.sampled_from([(hidden,), (hidden,), (1, hidden), (2, hidden), (hidden, 2)])
            )
            fill = draw(st.sampled_from([0.5, -1.0, 0.0, np.nan, np.inf]))
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                array = np.full(tensor_shape, fill).astype(dtype)
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except (ValueError, TypeError, KeyError, OverflowError, struct.error):
        assume(False)  # a combination gguf's writer itself refuses
    finally:
        writer.close()
    return path.read_bytes()


def check_gguf(data: bytes) -> None:
    from engine.interop.gguf import read_gguf

    path = scratch("gguf") / "fuzz.gguf"
    path.write_bytes(data)
    for model in (None, FP, ModelFingerprint("llama", 4, 8, "x")):
        result = clean(read_gguf, path, model=model)
        if result is not None:
            vector, warnings_ = result
            assert_sane_vector(vector)
            assert all(l >= 1 for l in vector.layers), "direction.N maps to our layer N+1"
            assert all(isinstance(w, str) for w in warnings_)
            if model is not None:
                assert vector.hidden_size == model.hidden_size and max(vector.layers) < model.n_layers
            vector_to_bytes(vector)  # what was imported can be saved


@fast(150)
@given(mutated(gguf_seeds))
def test_gguf_import_of_mutated_files(data):
    check_gguf(data)


@fast(100)
@given(gguf_files())
def test_gguf_import_of_hostile_control_vectors(data):
    check_gguf(data)


# ---- zip bundles ---------------------------------------------------------------------------------------------
MEMBER_NAMES = [
    "vectors/love.safetensors",
    "vectors/c/love.safetensors",
    "vectors/dir.safetensors",
    "../../x.safetensors",
    "vectors/../../x.safetensors",
    "/abs/x.safetensors",
    "C:/x.safetensors",
    "C:\\x.safetensors",
    "vectors\\x.safetensors",
    "vectors/\x1bx.safetensors",
    "vectors/./x.safetensors",
    "vectors/",
    "manifest.json",
    "x\x00.safetensors",
]
VECTOR_NAMES = ["love", "dir", "x", "", ".hidden", "..", "a/b", "../x", "con:", " x", "名前", "x" * 250]
COLLECTIONS = ["", "", "c", "..", ".trash", "a/b", "/", "名前"]


@st.composite
def bundle_files(draw) -> bytes:
    seeds = vector_seeds()
    entries = []
    for _ in range(draw(st.integers(0, 3))):
        data = draw(st.one_of(st.sampled_from(seeds), mutated(vector_seeds), st.binary(max_size=40)))
        entries.append(
            (
                draw(st.sampled_from(MEMBER_NAMES)),
                draw(st.sampled_from(VECTOR_NAMES)),
                draw(st.sampled_from(COLLECTIONS)),
                data,
                draw(st.sampled_from(["right", "right", "wrong", "none"])),
            )
        )
    records = []
    for member, name, collection, data, digest in entries:
        record = {"file": member, "name": name, "collection": collection}
        if digest != "none":
            record["sha256"] = hashlib.sha256(data if digest == "right" else b"other").hexdigest()
        if draw(st.integers(0, 7)) == 0:
            record[draw(st.sampled_from(["file", "name", "collection"]))] = draw(JUNK)
        records.append(record)
    manifest = {
        "format": draw(st.sampled_from(["actadd-studio/bundle"] * 4 + ["other", None])),
        "format_version": draw(st.sampled_from([1, 1, 1, 0, 2, "1", None, -1])),
        "vectors": records if draw(st.integers(0, 5)) else draw(JUNK),
    }
    manifest_bytes = draw(
        st.sampled_from([_json_bytes(manifest)] * 6 + [b"{", b"\xff\xfe", b"[" * 5000, b"", b"null"])
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are part of the attack
        with zipfile.ZipFile(buffer, "w") as archive:
            if draw(st.integers(0, 9)):
                archive.writestr("manifest.json", manifest_bytes)
            for member, _, _, data, _ in entries:
                info = zipfile.ZipInfo(member)
                info.compress_type = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
                if draw(st.integers(0, 9)) == 0:
                    info.external_attr = (0o120777 << 16) | 0x20  # a symlink
                archive.writestr(info, data)
            if draw(st.integers(0, 9)) == 0:
                archive.writestr(draw(st.sampled_from(MEMBER_NAMES)), b"extra")
    return buffer.getvalue()


def check_bundle(data: bytes) -> None:
    from engine.interop.bundle import import_bundle
    from engine.library import Library

    area = scratch("bundle")
    source = area / "fuzz.zip"
    source.write_bytes(data)
    library = Library(area / "lib")
    result = clean(import_bundle, library, source)
    inside = sorted(p.relative_to(area).as_posix() for p in area.rglob("*") if p.is_file())
    outside = [p for p in inside if p != "fuzz.zip" and not p.startswith("lib/")]
    assert outside == [], f"the import wrote outside the library: {outside}"
    listing = library.list()
    assert listing.bad_files == []
    if result is None:
        assert listing.entries == [], "a refused bundle must import nothing"
        return
    assert result.saved and len(listing.entries) == len(result.saved)
    for key, path in result.saved:
        assert path.resolve().is_relative_to(library.root.resolve())
        assert_sane_vector(library.load(key))


@fast(100)
@given(mutated(bundle_seeds))
def test_bundle_import_of_mutated_zips(data):
    check_bundle(data)


@fast(150)
@given(bundle_files())
def test_bundle_import_of_hostile_zips(data):
    check_bundle(data)


# ---- JSONL / CSV prompt pairs ---------------------------------------------------------------------------------
PAIR_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30) | st.sampled_from(
    ["", " ", "\u2028", "a\x85b", "x\x1cy", "\r", '"', ",", "positive", "\ufeff"]
)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), PAIR_TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(PAIR_TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def jsonl_texts(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["pair", "pair", "value", "text", "blank", "deep"]))
        if kind == "pair":
            record = {
                "positive": draw(st.one_of(PAIR_TEXT, JSON_VALUES)),
                "negative": draw(st.one_of(PAIR_TEXT, JSON_VALUES)),
            }
            if draw(st.booleans()):
                record[draw(PAIR_TEXT)] = draw(JSON_VALUES)
            lines.append(json.dumps(record, ensure_ascii=draw(st.booleans())))
        elif kind == "value":
            lines.append(json.dumps(draw(JSON_VALUES)))
        elif kind == "text":
            lines.append(draw(PAIR_TEXT))
        elif kind == "blank":
            lines.append(draw(st.sampled_from(["", "  ", "\t"])))
        else:
            lines.append("[" * 3000)
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


def _check_pairs(pairs) -> None:
    from engine.pairs import MAX_PROMPT_CHARS, PromptPair

    for pair in pairs:
        assert isinstance(pair, PromptPair)
        assert isinstance(pair.positive, str) and isinstance(pair.negative, str)
        assert pair.positive or pair.negative
        assert max(len(pair.positive), len(pair.negative)) <= MAX_PROMPT_CHARS


def check_pairs_text(text: str) -> None:
    from engine.pairs import parse_csv, parse_jsonl

    for parse in (parse_jsonl, parse_csv):
        pairs = clean(parse, text, "fuzz")
        if pairs is not None:
            _check_pairs(pairs)


def check_pairs_file(data: bytes, suffix: str) -> None:
    from engine.pairs import read_pairs

    path = scratch("pairs") / f"fuzz{suffix}"
    path.write_bytes(data)
    pairs = clean(read_pairs, path)
    if pairs is not None:
        assert pairs, "read_pairs returns at least one pair or refuses"
        _check_pairs(pairs)


@fast(200)
@given(st.one_of(jsonl_texts(), st.text(max_size=200)))
def test_pair_parsers_on_text(text):
    check_pairs_text(text)


@fast(120)
@given(
    st.one_of(
        st.binary(max_size=200),
        jsonl_texts().map(lambda t: t.encode("utf-8", "surrogatepass")),
        jsonl_texts().map(lambda t: b"\xef\xbb\xbf" + t.encode("utf-8", "surrogatepass")),
    ),
    st.sampled_from([".jsonl", ".json", ".csv", ".txt"]),
)
def test_pair_files(data, suffix):
    check_pairs_file(data, suffix)


SAFE_PROMPT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@fast(100)
@given(st.lists(st.tuples(SAFE_PROMPT, SAFE_PROMPT).filter(lambda p: p[0] and p[1]), min_size=1, max_size=5))
def test_jsonl_round_trip(pairs):
    """Whatever `json.dumps` writes one object per line (raw U+2028, NEL, etc. included) reads back."""
    from engine.pairs import PromptPair, parse_jsonl

    for ensure_ascii in (True, False):
        text = "\n".join(
            json.dumps({"positive": p, "negative": n}, ensure_ascii=ensure_ascii) for p, n in pairs
        )
        assert parse_jsonl(text) == [PromptPair(p, n) for p, n in pairs]


@fast(100)
@given(
    st.lists(
        # both sides filled (a half-filled pair is refused), and not all blank (a blank row is skipped)
        st.tuples(SAFE_PROMPT, SAFE_PROMPT).filter(
            lambda p: p[0] and p[1] and (p[0].strip() or p[1].strip())
        ),
        min_size=1,
        max_size=5,
    )
)
def test_csv_round_trip(pairs):
    """What `csv.writer` writes under a positive,negative header reads back unchanged."""
    import csv

    from engine.pairs import PromptPair, parse_csv

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["positive", "negative"])
    writer.writerows(pairs)
    assert parse_csv(buffer.getvalue()) == [PromptPair(p, n) for p, n in pairs]


# ---- CLI argument parsing --------------------------------------------------------------------------------------
LIBRARY_COMMANDS = [
    "list",
    "show",
    "rename",
    "tag",
    "notes",
    "duplicate",
    "rm",
    "trash",
    "restore",
    "combine",
    "to-direction",
    "export",
    "import",
    "nope",
]
COMMANDS = [["capture"], ["generate"], ["sweep"], ["library"], [], ["frobnicate"]] + [
    ["library", c] for c in LIBRARY_COMMANDS
]
OPTIONS = [
    "--help",
    "-h",
    "--json",
    "--library",
    "--model",
    "--quantize",
    "--device",
    "--dtype",
    "--trust-remote-code",
    "--positive",
    "--negative",
    "--pairs",
    "--layer",
    "--method",
    "--name",
    "--coeff",
    "--tag",
    "--notes",
    "--force",
    "--prompt",
    "--steer",
    "--mode",
    "--max-new-tokens",
    "--temperature",
    "--top-p",
    "--top-k",
    "--repetition-penalty",
    "--frequency-penalty",
    "--stop",
    "--seed",
    "--chat",
    "--compare",
    "--allow-other-model",
    "--search",
    "--text",
    "--collection",
    "--like",
    "--add",
    "--remove",
    "--empty",
    "--all",
    "--format",
    "--direction",
    "--skip-invalid-layers",
    "--position",
    "--vector",
    "--coeffs",
    "--layers",
    "--metric",
    "--targets",
    "--reference-text",
    "--reference-file",
    "--samples",
    "--experiment",
    "--quick",
    "--out",
    "--",
    "--no-such-option",
    "-x",
]
NAMES = ["love", "dir", "c/v", "v", "other", "missing", "c", "new", "c/new", "/top", "../x", ".x", "a:b"]
NUMBERS = [
    "0",
    "1",
    "2",
    "-1",
    "3",
    "64",
    "8192",
    "8193",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "0.5",
    "x",
    "1,2",
    ",",
    "",
]
STEER_SPECS = [
    "love",
    "love:4",
    "love:4@1",
    "dir:-2",
    "love:nan",
    "love:1@99",
    "love:1@-1",
    ":3",
    "love::",
    "@@",
    "c/v:2",
]
CHOICES = [
    "none",
    "4bit",
    "8bit",
    "auto",
    "cpu",
    "cuda",
    "float32",
    "actadd",
    "mean-diff",
    "pca",
    "front",
    "all",
    "generated",
    "ablate",
    "target-words",
    "target-prob",
    "perplexity",
    "bundle",
    "gguf",
    "repeng",
    "vector",
    "steering-vectors",
    "topic",
    "overhead",
    "mean",
    "demo",
]
ODD = [
    "",
    " ",
    "-",
    "--",
    "\t",
    "x" * 300,
    "名前",
    "\x1b[2J",
    "\udcff",
    "\u202e",
    "%s%n",
    "{}",
    "$(rm -rf /)",
    "a\nb",
]


def cli_values(files: dict[str, str]) -> st.SearchStrategy:
    return st.one_of(
        st.sampled_from(NAMES),
        st.sampled_from(NUMBERS),
        st.sampled_from(STEER_SPECS),
        st.sampled_from(CHOICES),
        st.sampled_from(ODD),
        st.sampled_from(sorted(files.values())),
        st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=8),
    )


def cli_argvs() -> st.SearchStrategy[list[str]]:
    values = st.deferred(lambda: cli_values(cli_inputs()))
    segment = st.one_of(
        st.tuples(st.sampled_from(OPTIONS), values).map(list),
        st.sampled_from(OPTIONS).map(lambda o: [o]),
        values.map(lambda v: [v]),
    )
    anything = st.tuples(st.sampled_from(COMMANDS), st.lists(segment, max_size=8)).map(
        lambda t: t[0] + [w for s in t[1] for w in s]
    )
    # library commands on vectors that exist, with hostile values where a name, tag or text goes
    existing = st.sampled_from(["love", "dir", "c/v", "other"])
    library = st.tuples(
        st.sampled_from(["rename", "tag", "notes", "duplicate", "to-direction", "show", "rm", "combine"]),
        existing,
        st.lists(values, min_size=0, max_size=2),
        st.lists(segment, max_size=2),
    ).map(lambda t: ["library", t[0], t[1], *t[2], *[w for s in t[3] for w in s]])
    return st.one_of(anything, library)


@functools.cache
def cli_inputs() -> dict[str, str]:
    """Files that CLI arguments may name: good and bad imports, pair files, texts; read-only."""
    from safetensors.torch import save

    folder = scratch("cli-inputs")
    positional, direction = vector_seeds()
    files = {
        "vec.safetensors": positional,
        "dir.safetensors": direction,
        "broken.safetensors": positional[:-7],
        "bundle.zip": bundle_seeds()[1],
        "bad.zip": b"PK\x03\x04 junk",
        "v.gguf": gguf_seeds()[0],
        "bad.gguf": b"GGUF" + b"\xff" * 40,
        "r.npy": numpy_seeds()[0],
        "r.npz": numpy_seeds()[1],
        "sv.safetensors": save({"1": torch.ones(64)}),
        "pairs.jsonl": b'{"positive": "Love", "negative": "Hate"}\n',
        "pairs.csv": b"positive,negative\nLove,Hate\n",
        "bad.jsonl": b"[" * 3000,
        "ref.txt": b"Some reference text.",
        "latin1.txt": b"caf\xe9",
        "x.pt": b"\x80\x04K\x01.",
    }
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = str(folder / name)
    (folder / "a-folder").mkdir()
    out["a-folder"] = str(folder / "a-folder")
    out["missing"] = str(folder / "missing.safetensors")
    return out


@functools.cache
def cli_library_template() -> Path:
    """A library with a position-wise vector, a direction, one in a collection, one from another model and a bad
    file; hidden size 64 and layers < 3, so they fit the tiny GPT-2."""
    from engine.library import Library

    root = scratch("cli-template")
    library = Library(root)
    other = ModelFingerprint("llama", 64, 3, "fedcba9876543210", "other")
    library.save(
        SteeringVector({1: torch.randn(3, 64)}, prompts={"positive": "Love", "negative": "Hate"}), "love"
    )
    library.save(
        SteeringVector({1: torch.randn(64), 2: torch.randn(64)}, method="pca", default_mode="all"), "dir"
    )
    library.save(SteeringVector({0: torch.randn(2, 64)}), "v", collection="c")
    library.save(SteeringVector({1: torch.randn(3, 64)}, fingerprint=other), "other")
    (root / "junk.safetensors").write_bytes(b"not a vector")
    if sys.platform.startswith("linux"):  # a name from a Latin-1 archive: not UTF-8
        (root / "junk.safetensors").with_name("caf\udce9.safetensors").write_bytes(
            vector_to_bytes(SteeringVector({1: torch.randn(64)}))
        )
    library.delete(library.save(SteeringVector({2: torch.ones(64)}), "gone").stem)
    return root


def _no_model(args):
    raise ModelLoadError("model loading is switched off while fuzzing the argument parsing")


def check_cli(argv: list[str], loaded=None) -> None:
    """`engine.cli.main(argv)` returns 0 (or 2 with one `error:` line) and never raises or prints a traceback.

    Models are not loaded (the loader raises ModelLoadError) unless `loaded` is given, which every command then
    gets instead, so that the arguments checked after loading are fuzzed too.
    """
    from engine.cli import main

    run = scratch("cli-run")
    shutil.copytree(cli_library_template(), run / "lib")
    cwd = run / "cwd"
    cwd.mkdir()
    loader = _no_model if loaded is None else (lambda args: loaded)
    # Streams like a real console's: UTF-8, strict on stdout, backslashreplace on stderr.
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", write_through=True)
    stderr = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="backslashreplace", write_through=True)
    old_cwd = os.getcwd()
    try:
        os.chdir(cwd)
        with (
            mock.patch.dict(os.environ, {"ACTADD_LIBRARY": str(run / "lib")}),
            mock.patch("engine.cli.model_commands.load_model_from_args", loader),
            mock.patch("engine.cli.sweep_commands.load_model_from_args", loader),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            no_hang(60 if loaded is not None else HANG_S),
        ):
            code = main(list(argv))
    finally:
        os.chdir(old_cwd)
    err = err_bytes.getvalue().decode("utf-8", "replace")
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, err
    if "--json" in argv and code == 0 and not any(a in argv for a in ("--help", "-h")):
        json.loads(out_bytes.getvalue().decode("utf-8"))
    # the library stays listable, whatever the command did to it
    from engine.library import Library

    listing = Library(run / "lib").list()
    assert {b.path.name for b in listing.bad_files} <= {"junk.safetensors", "caf\udce9.safetensors"}
    assert "junk.safetensors" in {b.path.name for b in listing.bad_files}


@fast(120)
@given(cli_argvs())
def test_cli_argument_parsing(argv):
    check_cli(argv)


@st.composite
def cli_model_argvs(draw) -> list[str]:
    """Commands that get past parsing to a (tiny) model, with a few hostile values."""
    values = cli_values(cli_inputs())
    base = draw(
        st.sampled_from(
            [
                ["generate", "--prompt", "I think", "--max-new-tokens", "3"],
                ["generate", "--prompt", "Hi", "--max-new-tokens", "2", "--steer", "love:4", "--compare"],
                ["capture", "--positive", "Love", "--negative", "Hate", "--layer", "1", "--name", "new"],
                [
                    "capture",
                    "--method",
                    "pca",
                    "--layer",
                    "1",
                    "--name",
                    "new",
                    "--positive",
                    "a",
                    "--negative",
                    "b",
                ],
                ["sweep", "--vector", "dir", "--coeffs", "0,2", "--samples", "1", "--max-new-tokens", "2"],
                [
                    "sweep",
                    "--positive",
                    "Love",
                    "--negative",
                    "Hate",
                    "--coeffs",
                    "1",
                    "--layers",
                    "1",
                    "--samples",
                    "1",
                    "--max-new-tokens",
                    "2",
                    "--targets",
                    "love",
                ],
            ]
        )
    )
    options = [o for o in OPTIONS[2:-3] if o not in ("--experiment", "--quick")]
    extra = draw(st.lists(st.tuples(st.sampled_from(options), values), max_size=3))
    argv = base + [w for pair in extra for w in pair]
    if argv[0] == "generate":  # keep the work small: the last value of an option wins
        argv += ["--max-new-tokens", "2"]
    elif argv[0] == "sweep":
        argv += ["--max-new-tokens", "2", "--samples", "1"]
    return argv


@fast(10)
@given(cli_model_argvs())
def test_cli_arguments_checked_after_the_model_loads(loaded_models, argv):
    check_cli(argv, loaded=loaded_models["gpt2"])


# ---- registry for scripts/fuzz_long.py ------------------------------------------------------------------------
# name -> (strategy factory, target taking what the strategy draws, byte-level target for atheris or None)
TARGETS = {
    "vector-mutated": (lambda: mutated(vector_seeds), check_vector_file, check_vector_file),
    "vector-structured": (safetensors_files, check_vector_file, None),
    "steering-vectors": (
        lambda: st.one_of(mutated(steering_vectors_seeds), safetensors_files()),
        check_steering_vectors,
        check_steering_vectors,
    ),
    "repeng": (
        lambda: st.tuples(st.one_of(mutated(numpy_seeds), numpy_files()), st.sampled_from([".npy", ".npz"])),
        lambda args: check_repeng(*args),
        lambda data: check_repeng(data, ".npz" if data[:2] == b"PK" else ".npy"),
    ),
    "gguf-mutated": (lambda: mutated(gguf_seeds), check_gguf, check_gguf),
    "gguf-structured": (gguf_files, check_gguf, None),
    "bundle-mutated": (lambda: mutated(bundle_seeds), check_bundle, check_bundle),
    "bundle-structured": (bundle_files, check_bundle, None),
    "pairs-text": (lambda: st.one_of(jsonl_texts(), st.text(max_size=400)), check_pairs_text, None),
    "pairs-file": (
        lambda: st.tuples(st.binary(max_size=400), st.sampled_from([".jsonl", ".csv"])),
        lambda args: check_pairs_file(*args),
        lambda data: check_pairs_file(data, ".csv" if data[:1] == b"," else ".jsonl"),
    ),
    "cli": (cli_argvs, check_cli, None),
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
