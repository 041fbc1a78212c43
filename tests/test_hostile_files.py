"""Explicit attacks with hostile files that the module tests don't already cover (issue 6).

Already covered elsewhere (see docs/reliability.md): zip traversal, absolute paths, symlinks, bombs, member
counts, encrypted members and lying sizes (tests/test_interop.py); corrupt, truncated, NaN/inf, float64,
int8, rank-3, hidden-size-0, overlapping, megabyte-metadata and non-UTF-8 vector files (tests/test_vector.py);
missing config, unknown architecture, truncated weights, tokenizer/vocabulary mismatch, remote code asked
for by an unknown architecture (tests/test_models.py).

Here: JSON nested past the parser's recursion limit in every reader, FIFOs and devices where a file is
expected, tensors that claim gigabytes, GGUF files whose counts would make gguf's reader build millions of
objects, `direction.N` out of range, non-UTF-8 and megabyte strings in the importers, pickles that would run
code, and remote code shipped with a known architecture or with the tokenizer.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import resource
import shutil
import struct
import sys
import threading
import time
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save as save_file_bytes
from safetensors.torch import save_file

from engine import interop
from engine.errors import ActAddError, InvalidInputError, ModelLoadError, VectorFileError
from engine.fingerprint import ModelFingerprint
from engine.interop.bundle import read_bundle
from engine.interop.gguf import KEY_MODEL_HINT, KEY_OURS, read_gguf
from engine.interop.repeng import read_repeng, read_steering_vectors
from engine.library import Library
from engine.models import load_model
from engine.pairs import parse_jsonl, read_pairs
from engine.vector import SteeringVector, load_vector, read_header, save_vector

DEEP = "[" * 100_000
FP = ModelFingerprint("llama", 4, 6, "0123456789abcdef", "tiny")


def finishes(fn, seconds: float = 10.0):
    """Run `fn` in a daemon thread; fail (instead of hanging the suite) if it doesn't return in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a hang"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`engine.cli.main` with a console's streams: UTF-8, strict on stdout, backslashreplace on stderr."""
    from engine.cli import main

    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="strict", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, out.getvalue().decode("utf-8"), err.getvalue().decode("utf-8")


def raw_safetensors(path: Path, header: dict | bytes, payload: bytes = b"") -> Path:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + payload)
    return path


def control_vector(path: Path, tensors: dict[str, np.ndarray], **strings) -> Path:
    writer = gguf.GGUFWriter(path, "controlvector")
    for key, value in strings.items():
        writer.add_string(key, value)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ---- JSON nested past the recursion limit: the project's error, never RecursionError --------------------
def test_deeply_nested_json_in_every_reader(tmp_path, model_dirs):
    # vector header and metadata
    with pytest.raises(VectorFileError, match="not UTF-8 JSON"):
        read_header(raw_safetensors(tmp_path / "header.safetensors", DEEP.encode()))
    save_file({"layers.1": torch.ones(4)}, tmp_path / "meta.safetensors", metadata={"prompts": DEEP})
    with pytest.raises(VectorFileError, match="prompts"):
        load_vector(tmp_path / "meta.safetensors")
    # one such file in a library is reported, the others still list
    library = Library(tmp_path / "lib")
    library.save(SteeringVector({1: torch.ones(4)}), "fine")
    shutil.copy(tmp_path / "meta.safetensors", library.root / "nested.safetensors")
    listing = library.list()
    assert listing.keys() == ["fine"] and [b.path.name for b in listing.bad_files] == ["nested.safetensors"]
    # a trash record
    trash_id = library.delete("fine")
    (library.trash_dir / trash_id / "origin.json").write_text(DEEP)
    assert [e.key for e in library.trash()] == [trash_id]
    # prompt pairs
    with pytest.raises(InvalidInputError, match="line 2"):
        parse_jsonl('{"positive": "a", "negative": "b"}\n' + DEEP)
    # steering-vectors header (also while guessing the format of a .safetensors file)
    raw_safetensors(tmp_path / "sv.safetensors", DEEP.encode())
    with pytest.raises(VectorFileError):
        read_steering_vectors(tmp_path / "sv.safetensors")
    assert interop.detect_format(tmp_path / "sv.safetensors") == "vector"
    # GGUF: our own round-trip metadata is ignored with a warning
    path = control_vector(tmp_path / "g.gguf", {"direction.1": np.ones(4, np.float32)}, **{KEY_OURS: DEEP})
    vector, warnings = read_gguf(path)
    assert vector.layer_ids == [2] and any("ignored" in w for w in warnings)
    # a model's config.json
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "model")
    (folder / "config.json").write_text(DEEP)
    with pytest.raises(ModelLoadError, match=r"config\.json is not valid JSON"):
        load_model(folder, device="cpu")


# ---- FIFOs and devices where a file is expected: refused at once, never a blocked open --------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_fifos_are_refused_not_waited_on(tmp_path):
    library = Library(tmp_path / "lib")
    library.save(SteeringVector({1: torch.ones(4)}), "fine")
    os.mkfifo(library.root / "pipe.safetensors")
    listing = finishes(library.list)
    assert listing.keys() == ["fine"] and [b.path.name for b in listing.bad_files] == ["pipe.safetensors"]
    with pytest.raises(VectorFileError, match="not a regular file"):
        finishes(lambda: load_vector(library.root / "pipe.safetensors"))
    for suffix in (".zip", ".safetensors", ".gguf", ".npy", ".npz"):
        os.mkfifo(tmp_path / f"in{suffix}")
        with pytest.raises(ActAddError):
            finishes(lambda s=suffix: interop.import_file(library, tmp_path / f"in{s}"))
    os.mkfifo(tmp_path / "pairs.jsonl")
    with pytest.raises(InvalidInputError, match="not a file"):
        finishes(lambda: read_pairs(tmp_path / "pairs.jsonl"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_a_fifo_in_a_model_folder_is_refused_not_waited_on(model_dirs, tmp_path, name):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "m")
    (folder / name).unlink()
    os.mkfifo(folder / name)
    with pytest.raises(ModelLoadError, match=f"{name} is not a regular file"):
        finishes(lambda: load_model(folder, device="cpu"))


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_devices_are_not_read(tmp_path):
    link = tmp_path / "zero.safetensors"
    link.symlink_to("/dev/zero")
    with pytest.raises(VectorFileError, match="not a regular file"):
        finishes(lambda: load_vector(link))
    library = Library(tmp_path)
    assert [b.path.name for b in finishes(library.list).bad_files] == ["zero.safetensors"]


# ---- sizes that claim gigabytes: refused before anything is allocated ---------------------------------------
def test_tensors_claiming_gigabytes_allocate_nothing(tmp_path):
    before = peak_rss_mb()
    gig = {"dtype": "F32", "shape": [2**28, 4], "data_offsets": [0, 2**32]}
    with pytest.raises(VectorFileError, match="outside the file"):
        load_vector(raw_safetensors(tmp_path / "v.safetensors", {"layers.1": gig}, bytes(16)))
    sv = {"1": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 2**32]}}
    with pytest.raises(VectorFileError):
        read_steering_vectors(raw_safetensors(tmp_path / "sv.safetensors", sv, bytes(16)))
    for shape in [(2**20, 2**20), (4, 2**40), (2, 2**28)]:  # .npy headers claiming up to 16 TB
        header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"
        header += " " * (63 - len(header) % 64) + "\n"
        data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(64)
        (tmp_path / "huge.npy").write_bytes(data)
        with pytest.raises(VectorFileError):
            read_repeng(tmp_path / "huge.npy")
        with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
            archive.writestr("1.npy", data)
        with pytest.raises(VectorFileError):
            read_repeng(tmp_path / "huge.npz")
    assert peak_rss_mb() - before < 200


def test_a_layer_key_with_a_trailing_newline_is_not_a_second_layer_1(tmp_path):
    """`^layers\\.(\\d+)$` also matches "layers.1\\n"; the two keys must not collapse into one layer."""
    entry = {"dtype": "F32", "shape": [4]}
    header = {
        "layers.1": {**entry, "data_offsets": [0, 16]},
        "layers.1\n": {**entry, "data_offsets": [16, 32]},
    }
    path = raw_safetensors(tmp_path / "twice.safetensors", header, bytes(32))
    with pytest.raises(VectorFileError, match="unexpected tensor"):
        load_vector(path)


# ---- GGUF: counts that would make gguf's reader build millions of objects -------------------------------------
def _gguf(tensor_count: int, kv_count: int, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) + body


def _gguf_key(key: str, value_type: int) -> bytes:
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", value_type)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_gguf(2**63, 0, bytes(64)), id="2^63 tensors"),
        pytest.param(_gguf(0, 2**63, bytes(64)), id="2^63 keys"),
        pytest.param(_gguf(10**6, 0, bytes(64)), id="a million tensors"),
        pytest.param(
            _gguf(0, 1, _gguf_key("general.architecture", 8) + struct.pack("<Q", 2**62)),
            id="2^62-byte string",
        ),
        pytest.param(_gguf(0, 1, _gguf_key("x", 9) + struct.pack("<IQ", 8, 2**40)), id="2^40-item array"),
        # 800 KB of empty strings: before the pre-scan, ~6 s and ~150 MB; 24 MB took 3 minutes and 4.6 GB
        pytest.param(
            _gguf(0, 1, _gguf_key("x", 9) + struct.pack("<IQ", 8, 100_000) + bytes(800_000)), id="strings"
        ),
        pytest.param(
            _gguf(0, 1, _gguf_key("x", 9) + struct.pack("<IQ", 9, 10) + bytes(200)), id="nested arrays"
        ),
        pytest.param(_gguf(0, 1, _gguf_key("x", 77) + bytes(8)), id="unknown value type"),
    ],
)
def test_gguf_count_bombs_are_refused_at_once(tmp_path, data):
    path = tmp_path / "bomb.gguf"
    path.write_bytes(data)
    before, start = peak_rss_mb(), time.monotonic()
    with pytest.raises(VectorFileError, match="GGUF"):
        finishes(lambda: read_gguf(path))
    assert time.monotonic() - start < 2 and peak_rss_mb() - before < 50


def test_gguf_direction_index_out_of_range(tmp_path):
    for name in ("direction.4096", "direction.999999", "direction.1000000", "direction.-1", "direction.01"):
        path = control_vector(tmp_path / "far.gguf", {name: np.ones(4, np.float32)})
        with pytest.raises(VectorFileError, match=r"out of range|unexpected tensor"):
            read_gguf(path)
    # in range for the format but past the model: dropped with a warning, never steering a missing block
    path = control_vector(
        tmp_path / "past.gguf",
        {"direction.2": np.ones(4, np.float32), "direction.40": np.ones(4, np.float32)},
    )
    vector, warnings = read_gguf(path, model=FP)
    assert vector.layer_ids == [3] and any("[40]" in w for w in warnings)


def test_gguf_non_utf8_and_megabyte_strings(tmp_path):
    path = control_vector(
        tmp_path / "big.gguf", {"direction.1": np.ones(4, np.float32)}, **{KEY_OURS: "x" * 2**21}
    )
    vector, warnings = read_gguf(path)
    assert vector.layer_ids == [2] and any("oversized" in w for w in warnings)
    data = control_vector(
        tmp_path / "hint.gguf", {"direction.1": np.ones(4, np.float32)}, **{KEY_MODEL_HINT: "llama"}
    ).read_bytes()
    (tmp_path / "latin1.gguf").write_bytes(data.replace(b"llama", b"ll\xe9\xffa"))
    with pytest.raises(VectorFileError, match="unreadable"):
        read_gguf(tmp_path / "latin1.gguf")


def test_non_utf8_pairs_manifest_and_config(tmp_path, model_dirs):
    (tmp_path / "pairs.jsonl").write_bytes(b'{"positive": "caf\xe9", "negative": "x"}\n')
    with pytest.raises(InvalidInputError, match="UTF-8"):
        read_pairs(tmp_path / "pairs.jsonl")
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as archive:
        archive.writestr("manifest.json", b'{"format": "actadd-studio/bundle\xff"}')
    with pytest.raises(VectorFileError, match=r"manifest\.json"):
        read_bundle(tmp_path / "b.zip")
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "model")
    (folder / "config.json").write_bytes(b'{"model_type": "gpt\xff2"}')
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load_model(folder, device="cpu")


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="needs a file system that takes any bytes")
def test_file_names_and_arguments_that_are_not_utf8(tmp_path):
    """A file copied from a Latin-1 archive (caf\\xe9.safetensors) and bytes that aren't UTF-8 on the command
    line arrive as lone surrogates, which no UTF-8 writer (index, safetensors metadata, stdout) accepts."""
    from engine.vector import vector_to_bytes

    library = Library(tmp_path / "lib")
    library.save(SteeringVector({1: torch.ones(4)}), "fine")
    library.save(SteeringVector({1: torch.ones(4)}), "latin")
    os.rename(bytes(library.root / "latin.safetensors"), bytes(library.root) + b"/caf\xe9.safetensors")
    for attempt in (library, Library(library.root)):  # fresh listing, then one from the index it wrote
        listing = attempt.list()
        assert listing.keys() == ["fine"] and [b.path.name for b in listing.bad_files] == [
            "caf\udce9.safetensors"
        ]
    code, out, err = run_cli(["library", "list", "--library", str(library.root), "--json"])
    assert code == 0 and "caf\\udce9" in err
    assert json.loads(out)["bad_files"][0]["path"].endswith("caf\udce9.safetensors")
    with pytest.raises(VectorFileError, match="not valid Unicode"):
        library.set_notes("fine", "caf\udce9")
    with pytest.raises(VectorFileError, match="not valid Unicode"):
        vector_to_bytes(SteeringVector({1: torch.ones(4)}, prompts={"positive": "\udcff", "negative": ""}))
    for argv in (["library", "notes", "fine", "\udcff"], ["library", "rename", "fine", "caf\udce9"]):
        code, out, err = run_cli([*argv, "--library", str(library.root)])
        assert code == 2 and err.count("error: ") == 1 and "Traceback" not in err
    assert library.load("fine").notes == ""


def _zip_claiming_version(members: dict[str, bytes], version: int) -> bytes:
    """A zip whose central directory says it needs zip version `version` / 10 to extract."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    data = bytearray(buffer.getvalue())
    at = data.find(b"PK\x01\x02")  # the first central directory record; "version needed" is at +6
    data[at + 6 : at + 8] = struct.pack("<H", version)
    return bytes(data)


def test_zips_claiming_an_unknown_zip_version(tmp_path):
    """zipfile raises NotImplementedError ("zip file version 25.5") for these; found by atheris."""
    (tmp_path / "v.zip").write_bytes(_zip_claiming_version({"manifest.json": b"{}"}, 255))
    with pytest.raises(VectorFileError, match=r"not a valid \.zip bundle"):
        read_bundle(tmp_path / "v.zip")
    npy = io.BytesIO()
    np.save(npy, np.ones((2, 4), np.float32))
    (tmp_path / "v.npz").write_bytes(_zip_claiming_version({"1.npy": npy.getvalue()}, 115))
    with pytest.raises(VectorFileError, match=r"not a valid \.npz"):
        read_repeng(tmp_path / "v.npz")


def test_malformed_zip_names_and_header_types(tmp_path):
    """Found by atheris: a member name flagged UTF-8 whose local header isn't UTF-8 (zipfile's open raised
    UnicodeDecodeError), and a steering-vectors dtype that is a list (TypeError: unhashable)."""
    vector = save_file_bytes({"layers.1": torch.ones(4)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("vectors/\u00e9.safetensors", vector)  # non-ASCII: written with the UTF-8 flag
        manifest = {"file": "vectors/\u00e9.safetensors", "name": "x", "collection": ""}
        archive.writestr(
            "manifest.json",
            json.dumps({"format": "actadd-studio/bundle", "format_version": 1, "vectors": [manifest]}),
        )
    data = bytearray(buffer.getvalue())
    local_name = 30 + len(b"vectors/")  # the first local header's name starts at offset 30
    assert data[local_name : local_name + 2] == "\u00e9".encode()
    data[local_name + 1] = 0x41  # 0xC3 0x41: not UTF-8
    (tmp_path / "b.zip").write_bytes(bytes(data))
    with pytest.raises(VectorFileError, match="corrupt"):
        read_bundle(tmp_path / "b.zip")
    header = {"1": {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}
    with pytest.raises(VectorFileError, match="float"):
        read_steering_vectors(raw_safetensors(tmp_path / "sv.safetensors", header, bytes(16)))


def test_megabyte_manifest_is_refused_unread(tmp_path):
    with zipfile.ZipFile(tmp_path / "m.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", b" " * (9 * 2**20) + b"{}")
    with pytest.raises(VectorFileError):
        read_bundle(tmp_path / "m.zip")


def test_hidden_size_zero_in_the_importers(tmp_path):
    path = control_vector(tmp_path / "z.gguf", {"direction.1": np.ones((1, 0), np.float32)})
    with pytest.raises(VectorFileError):
        read_gguf(path)
    np.save(tmp_path / "z.npy", np.ones((2, 0), np.float32))
    with pytest.raises(VectorFileError):
        read_repeng(tmp_path / "z.npy")
    save_file({"1": torch.ones(0)}, tmp_path / "z.safetensors")
    with pytest.raises(VectorFileError):
        read_steering_vectors(tmp_path / "z.safetensors")


# ---- code execution: pickles and remote code are never run -----------------------------------------------------
class _Canary:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickles_in_imports_and_weights_are_never_loaded(tmp_path, model_dirs):
    canary = tmp_path / "canary"
    payload = pickle.dumps(np.array([_Canary(canary)], dtype=object))
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - len(header) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload
    (tmp_path / "evil.npy").write_bytes(npy)
    with pytest.raises(VectorFileError, match="pickle"):
        read_repeng(tmp_path / "evil.npy")
    with zipfile.ZipFile(tmp_path / "evil.npz", "w") as archive:
        archive.writestr("1.npy", npy)
    with pytest.raises(VectorFileError, match="pickle"):
        read_repeng(tmp_path / "evil.npz")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Canary(canary)))
    with pytest.raises(ActAddError):
        interop.import_file(Library(tmp_path / "lib"), tmp_path / "evil.pt")
    # a model whose only weights are a pickled pytorch_model.bin
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"transformer.wte.weight": _Canary(canary)}))
    with pytest.raises(ModelLoadError):
        load_model(folder, device="cpu")
    assert not canary.exists(), "a pickle was unpickled"


def test_remote_code_shipped_with_a_known_architecture_or_tokenizer_is_never_run(tmp_path, model_dirs):
    canary = tmp_path / "canary"
    code = f"open({str(canary)!r}, 'w').close()\nfrom transformers import GPT2LMHeadModel as Evil, GPT2Config as EvilConfig\n"
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "automap")
    (folder / "evil.py").write_text(code)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["evil.Evil", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    loaded = load_model(folder, device="cpu")  # transformers' own GPT-2 classes, not the shipped ones
    assert type(loaded.model).__module__.startswith("transformers.")
    assert not canary.exists(), "code shipped with the model ran without trust_remote_code"


# ---- half-downloaded and mismatched model folders: a message naming the file ---------------------------------
def test_missing_tokenizer_files_are_named(tmp_path, model_dirs):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "half")
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
    ):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match=r"no tokenizer file \(tokenizer\.json"):
        load_model(folder, device="cpu")


def test_weights_of_another_shape_name_the_files(tmp_path, model_dirs):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "mixed")
    config = json.loads((folder / "config.json").read_text())
    config["n_embd"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors.*config\.json"):
        load_model(folder, device="cpu")


def test_empty_weights_file_is_named(tmp_path, model_dirs):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "empty")
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"model\.safetensors.*truncated or corrupt"):
        load_model(folder, device="cpu")


def test_a_saved_vector_with_near_limit_nesting_survives_a_rewrite(tmp_path):
    """Metadata nested just under the parser's limit loads, and a library rewrite (tagging) re-serialises it."""
    save_file(
        {"layers.1": torch.ones(4)},
        tmp_path / "n.safetensors",
        metadata={"prompts": '{"a":' * 900 + "1" + "}" * 900},
    )
    library = Library(tmp_path / "lib")
    library.save(load_vector(tmp_path / "n.safetensors"), "nested")
    library.set_tags("nested", ["deep"])
    assert library.load("nested").tags == ("deep",)
    again = save_vector(library.load("nested"), tmp_path / "again.safetensors")
    assert load_vector(again).prompts == load_vector(tmp_path / "n.safetensors").prompts
