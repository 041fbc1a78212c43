"""Interop: llama.cpp GGUF control vectors (round trips, layer mapping, refusals), repeng and
steering-vectors imports, and `.zip` bundles treated as hostile input."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import engine
from engine import interop
from engine.errors import IncompatibleVectorError, LibraryError, VectorFileError
from engine.fingerprint import ModelFingerprint
from engine.interop import bundle as bundle_module
from engine.interop import repeng as repeng_module
from engine.interop.gguf import gguf_bytes, read_gguf
from engine.library import Library
from engine.vector import SteeringVector

FP = ModelFingerprint("llama", 16, 6, "0123456789abcdef", "tiny-llama")


@pytest.fixture(scope="module")
def love(loaded_models) -> SteeringVector:
    """A real position-wise ActAdd vector from the tiny GPT-2 (3 blocks), at layers 1 and 2."""
    return engine.capture_actadd(loaded_models["gpt2"], "Love", "Hate", [1, 2])


@pytest.fixture
def lib(tmp_path) -> Library:
    return Library(tmp_path / "library")


def direction_vector(layers=(2, 4), hidden=16, fingerprint=FP, **kw) -> SteeringVector:
    gen = torch.Generator().manual_seed(0)
    return SteeringVector(
        layers={l: torch.randn(hidden, generator=gen) for l in layers},
        method="pca",
        default_mode="all",
        fingerprint=fingerprint,
        prompts={"pairs": [{"positive": "happy", "negative": "sad"}]},
        provenance={"pad_token": "Ġ", "dtype": "float32", "quantize": "4bit", "library_version": "0.1.0"},
        tags=("mood",),
        notes="from 1 pair",
        default_coeff=2.5,
        **kw,
    )


def write_control_vector(
    path: Path,
    directions: dict[int, np.ndarray],
    *,
    layer_count: int | None = None,
    count_type: str = "uint32",
    arch: str = "controlvector",
    hint: str = "llama",
) -> Path:
    """A control vector the way repeng (uint32) or llama.cpp's cvector-generator (int32) writes one."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_string(f"{arch}.model_hint", hint)
    if layer_count is not None:
        getattr(writer, f"add_{count_type}")(f"{arch}.layer_count", layer_count)
    for n, array in directions.items():
        writer.add_tensor(f"direction.{n}", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ---- GGUF export ---------------------------------------------------------------------------------------
def test_gguf_export_layout_and_mapping(lib, tmp_path):
    vector = direction_vector(layers=(2, 4))
    lib.save(vector, "mood")
    result = interop.export(lib, "mood", tmp_path / "mood.gguf")
    assert result.warnings == []
    reader = gguf.GGUFReader(result.path)
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "llama"
    count = reader.get_field("controlvector.layer_count")
    assert count.contents() == 2 and count.types == [gguf.GGUFValueType.UINT32]
    # our layer l (input of block l) is llama.cpp's direction.{l-1} (output of block l-1)
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert set(tensors) == {"direction.1", "direction.3"}
    np.testing.assert_array_equal(tensors["direction.1"], vector.layers[2].numpy())
    np.testing.assert_array_equal(tensors["direction.3"], vector.layers[4].numpy())
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)


def test_gguf_round_trip_keeps_numbers_layers_and_provenance(lib, tmp_path):
    vector = direction_vector(layers=(2, 3, 5))
    lib.save(vector, "mood", collection="c")
    interop.export(lib, "c/mood", tmp_path / "mood.gguf")
    result = interop.import_file(lib, tmp_path / "mood.gguf", name="back")
    assert result.saved == [("back", lib.root / "back.safetensors")]
    back = lib.load("back")
    assert back.layer_ids == [2, 3, 5]
    for l in back.layer_ids:
        assert torch.equal(back.layers[l], vector.layers[l])
    assert back.fingerprint == FP and back.prompts == vector.prompts
    assert back.method == "pca" and back.default_coeff == 2.5 and back.tags == ("mood",)
    assert back.provenance["quantize"] == "4bit" and back.provenance["pad_token"] == "Ġ"
    record = back.provenance["import"]
    assert record["source_format"].startswith("gguf") and record["direction_indices"] == [1, 2, 4]


def test_gguf_round_trip_of_a_real_capture(lib, love, gpt2, tmp_path):
    lib.save(love, "love")
    lib.to_direction("love", "love-dir")
    with pytest.raises(IncompatibleVectorError, match=r"direction\.0"):
        interop.export(lib, "love-dir", tmp_path / "x.gguf")  # layer 1 would be direction.0
    result = interop.export(lib, "love-dir", tmp_path / "x.gguf", skip_invalid_layers=True)
    assert any("dropped layers [1]" in w for w in result.warnings)
    imported = interop.import_file(lib, tmp_path / "x.gguf", name="back", model=gpt2.fingerprint)
    assert imported.warnings == []
    back, original = lib.load("back"), lib.load("love-dir")
    assert back.layer_ids == [2] and torch.equal(back.layers[2], original.layers[2])
    engine.check_fits(back, gpt2.fingerprint)  # usable on the model it came from


def test_gguf_refuses_position_wise_vectors_unless_converted(lib, love, tmp_path):
    lib.save(love.replace(layers={2: love.layers[2]}), "love")
    with pytest.raises(IncompatibleVectorError) as info:
        interop.export(lib, "love", tmp_path / "x.gguf")
    message = str(info.value)
    assert "position-wise" in message and "to-direction" in message and "direction" in message
    assert not (tmp_path / "x.gguf").exists()

    result = interop.export(lib, "love", tmp_path / "mean.gguf", direction="mean")
    assert any("converted" in w for w in result.warnings)
    back, _ = read_gguf(tmp_path / "mean.gguf")
    torch.testing.assert_close(back.layers[2], love.to_direction().layers[2])
    interop.export(lib, "love", tmp_path / "last.gguf", direction=-1)
    back, _ = read_gguf(tmp_path / "last.gguf")
    assert torch.equal(back.layers[2], love.layers[2][-1])


def test_gguf_refuses_layer_0_and_1(lib, tmp_path):
    lib.save(direction_vector(layers=(0,)), "embed")
    lib.save(direction_vector(layers=(1,)), "first")
    lib.save(direction_vector(layers=(0, 1, 3)), "mixed")
    with pytest.raises(IncompatibleVectorError, match="embedding"):
        interop.export(lib, "embed", tmp_path / "a.gguf")
    with pytest.raises(IncompatibleVectorError, match=r"direction\.0"):
        interop.export(lib, "first", tmp_path / "b.gguf")
    with pytest.raises(IncompatibleVectorError, match="no layer"):
        interop.export(lib, "first", tmp_path / "b.gguf", skip_invalid_layers=True)
    result = interop.export(lib, "mixed", tmp_path / "c.gguf", skip_invalid_layers=True)
    assert [t.name for t in gguf.GGUFReader(result.path).tensors] == ["direction.2"]
    assert not (tmp_path / "a.gguf").exists() and not (tmp_path / "b.gguf").exists()


def test_export_never_overwrites_without_force(lib, tmp_path):
    lib.save(direction_vector(), "v")
    (tmp_path / "v.gguf").write_bytes(b"precious")
    with pytest.raises(LibraryError, match="already exists"):
        interop.export(lib, "v", tmp_path / "v.gguf")
    assert (tmp_path / "v.gguf").read_bytes() == b"precious"
    interop.export(lib, "v", tmp_path / "v.gguf", overwrite=True)
    assert read_gguf(tmp_path / "v.gguf")[0].layer_ids == [2, 4]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    layers=st.sets(st.integers(2, 60), min_size=1, max_size=6),
    hidden=st.integers(1, 48),
    data=st.data(),
    count_type=st.sampled_from(["uint32", "int32"]),
)
def test_gguf_round_trip_property(layers, hidden, data, count_type, tmp_path):
    values = {
        l: np.array(
            data.draw(
                st.lists(
                    st.floats(width=32, allow_nan=False, allow_infinity=False),
                    min_size=hidden,
                    max_size=hidden,
                )
            ),
            dtype=np.float32,
        )
        for l in layers
    }
    vector = SteeringVector(layers={l: torch.from_numpy(v) for l, v in values.items()}, default_mode="all")
    raw, _ = gguf_bytes(vector, layer_count_type=count_type)
    path = tmp_path / f"p-{hashlib.sha256(raw).hexdigest()[:8]}.gguf"
    path.write_bytes(raw)
    back, warnings = read_gguf(path)
    assert warnings == []
    assert back.layer_ids == sorted(layers)
    for l in layers:
        np.testing.assert_array_equal(back.layers[l].numpy(), values[l])


# ---- GGUF import of files written by other tools -----------------------------------------------------
@pytest.mark.parametrize("count_type", ["uint32", "int32"])
def test_gguf_import_repeng_and_llama_cpp_layer_count_types(tmp_path, count_type):
    directions = {n: np.full(16, float(n), dtype=np.float32) for n in (1, 2, 3)}
    path = write_control_vector(tmp_path / "cv.gguf", directions, layer_count=3, count_type=count_type)
    vector, warnings = read_gguf(path, model=FP)
    assert warnings == []
    assert vector.layer_ids == [2, 3, 4]  # direction.N -> our layer N+1
    for n in (1, 2, 3):
        assert torch.equal(vector.layers[n + 1], torch.full((16,), float(n)))
    assert vector.method == "imported" and vector.default_mode == "all" and vector.default_coeff == 1.0
    record = vector.provenance["import"]
    assert record["layer_count"] == 3 and record["layer_count_type"] == count_type
    assert record["source_format"] == "gguf (llama.cpp control vector)" and record["model_hint"] == "llama"
    assert vector.fingerprint == FP


def test_gguf_import_f16(tmp_path):
    path = write_control_vector(
        tmp_path / "h.gguf", {2: np.linspace(-1, 1, 16).astype(np.float16)}, layer_count=1
    )
    vector, _ = read_gguf(path)
    assert vector.layers[3].dtype == torch.float32
    torch.testing.assert_close(vector.layers[3], torch.linspace(-1, 1, 16), atol=1e-3, rtol=0)


def test_gguf_import_warns_about_direction_0_and_shifted_indices(tmp_path):
    # written 0-based (as if our layer numbers were used as is): llama.cpp would reject the file
    zero_based = {n: np.ones(16, dtype=np.float32) for n in range(5)}
    path = write_control_vector(tmp_path / "zero.gguf", zero_based, layer_count=5)
    vector, warnings = read_gguf(path)
    assert vector.layer_ids == [1, 2, 3, 4, 5]
    assert any("direction.0" in w and "reject" in w and "shifted by one" in w for w in warnings)

    # against a model of 6 blocks: direction.1..6 is one past the end, and direction.5 is the last output
    shifted = {n: np.ones(16, dtype=np.float32) for n in range(1, 7)}
    path = write_control_vector(tmp_path / "shift.gguf", shifted, layer_count=6)
    vector, warnings = read_gguf(path, model=FP)
    assert vector.layer_ids == [2, 3, 4, 5]
    assert any("past the model" in w and "shifted by one" in w and "[6]" in w for w in warnings)
    assert any("last block" in w and "[5]" in w for w in warnings)

    inconsistent = write_control_vector(tmp_path / "count.gguf", {1: np.ones(16, np.float32), 2: np.ones(16, np.float32)}, layer_count=1)  # fmt: skip
    assert any("layer_count = 1" in w for w in read_gguf(inconsistent)[1])
    missing = write_control_vector(tmp_path / "nocount.gguf", {1: np.ones(16, np.float32)})
    assert any("no controlvector.layer_count" in w for w in read_gguf(missing)[1])


def test_gguf_import_refuses_mismatched_hidden_size(tmp_path):
    path = write_control_vector(tmp_path / "w.gguf", {1: np.ones(32, np.float32)}, layer_count=1)
    with pytest.raises(IncompatibleVectorError, match="hidden size"):
        read_gguf(path, model=FP)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: write_control_vector(p, {1: np.ones(16, np.float32)}, arch="llama"), "architecture"),
        (lambda p: write_control_vector(p, {1: np.ones(16, np.float64)}, layer_count=1), "F64"),
        (lambda p: write_control_vector(p, {1: np.ones((4, 16), np.float32)}, layer_count=1), "shape"),
        (lambda p: write_control_vector(p, {1: np.full(16, np.nan, np.float32)}, layer_count=1), "NaN"),
        (lambda p: write_control_vector(p, {1: np.full(16, np.inf, np.float32)}, layer_count=1), "NaN"),
        (
            lambda p: write_control_vector(p, {1: np.ones(16, np.float32), 2: np.ones(8, np.float32)}),
            "different sizes",
        ),
        (lambda p: p.write_bytes(b"GGUF" + b"\xff" * 40), "malformed"),
        (lambda p: p.write_bytes(b"not a gguf at all"), "not a GGUF"),
        (lambda p: p.write_bytes(b""), "not a GGUF"),
    ],
)
def test_gguf_import_refuses_bad_files(tmp_path, make, match):
    path = tmp_path / "bad.gguf"
    make(path)
    with pytest.raises(VectorFileError, match=match):
        read_gguf(path)


def test_gguf_import_refuses_foreign_tensor_names_and_truncation(tmp_path):
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(path, "controlvector")
    writer.add_tensor("token_embd.weight", np.ones(16, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VectorFileError, match=r"direction\.N"):
        read_gguf(path)
    good = write_control_vector(tmp_path / "good.gguf", {1: np.ones(4096, np.float32)}, layer_count=1)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 30):
        truncated = tmp_path / f"cut{cut}.gguf"
        truncated.write_bytes(data[:cut])
        with pytest.raises(VectorFileError):
            read_gguf(truncated)


def test_gguf_import_bounds_the_file_size(tmp_path, monkeypatch):
    path = write_control_vector(tmp_path / "big.gguf", {1: np.ones(1024, np.float32)}, layer_count=1)
    monkeypatch.setattr("engine.interop.MAX_IMPORT_BYTES", 1000)
    with pytest.raises(VectorFileError, match="more than"):
        interop.check_import_size(path, 1000)


# ---- repeng ------------------------------------------------------------------------------------------
def test_repeng_npz_dict(lib, tmp_path):
    directions = {"10": np.full(16, 1.0, np.float32), "layer_3": np.full(16, 3.0, np.float64)}
    np.savez(tmp_path / "happy.npz", **directions)
    result = interop.import_file(lib, tmp_path / "happy.npz", collection="repeng")
    assert result.saved[0][0] == "repeng/happy"
    vector = lib.load("repeng/happy")
    assert vector.layer_ids == [4, 11]  # repeng layer i (output of block i) -> our i+1
    assert torch.equal(vector.layers[11], torch.ones(16))
    assert torch.equal(vector.layers[4], torch.full((16,), 3.0))
    record = vector.provenance["import"]
    assert record["source_format"].startswith("repeng") and record["source_layers"] == [3, 10]
    assert vector.method == "imported" and vector.fingerprint is None


def test_repeng_npy_stack_with_model(lib, tmp_path):
    stack = np.zeros((6, 16), np.float32)
    stack[1], stack[2], stack[5] = 1.0, 2.0, 5.0
    np.save(tmp_path / "stack.npy", stack)
    result = interop.import_file(lib, tmp_path / "stack.npy", model=FP)
    vector = lib.load("stack")
    assert vector.layer_ids == [2, 3]  # zero rows skipped, the last block's output dropped
    assert any("last block" in w for w in result.warnings)
    assert vector.fingerprint == FP


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: np.save(p.with_suffix(".npy"), {"1": np.ones(4)}, allow_pickle=True), "pickle"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones(16, np.float32)), "carries no layer"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((2, 16), np.int32)), "dtype"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((2, 2, 16), np.float32)), "shape"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((2, 16), np.float32)), "zero"),
        (lambda p: np.save(p.with_suffix(".npy"), np.full((2, 16), np.nan, np.float32)), "NaN"),
        (lambda p: np.save(p.with_suffix(".npy"), np.ones((2, 16), np.complex64)), "dtype"),
        (lambda p: np.savez(p.with_suffix(".npz"), **{"1": np.array([{"x": 1}], dtype=object)}), "pickle"),
        (lambda p: np.savez(p.with_suffix(".npz"), weird=np.ones(16, np.float32)), "layer number"),
        (lambda p: np.savez(p.with_suffix(".npz"), **{"1": np.ones((3, 16), np.float32)}), "shape"),
        (lambda p: p.with_suffix(".npy").write_bytes(b"\x80\x04K\x01."), "not a numpy"),
        (lambda p: p.with_suffix(".npy").write_bytes(b"\x93NUMPY\x01\x00garbage"), "malformed"),
    ],
)
def test_repeng_refuses_bad_files(tmp_path, make, match):
    make(tmp_path / "bad")
    (path,) = tmp_path.glob("bad.*")
    with pytest.raises(VectorFileError, match=match):
        repeng_module.read_repeng(path)


def test_repeng_npz_bomb_is_refused_before_decompressing(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "bomb.npz", **{"1": np.zeros(200_000, np.float32)})
    assert (tmp_path / "bomb.npz").stat().st_size < 10_000
    monkeypatch.setattr(repeng_module, "MAX_IMPORT_BYTES", 100_000)
    with pytest.raises(VectorFileError, match="unpack"):
        repeng_module.read_repeng(tmp_path / "bomb.npz")


# ---- steering-vectors ---------------------------------------------------------------------------------
def test_steering_vectors_layer_activations(lib, tmp_path):
    save_file(
        {"2": torch.full((16,), 2.0), "4": torch.full((16,), 4.0, dtype=torch.bfloat16)},
        tmp_path / "sv.safetensors",
        metadata={"layer_type": "decoder_block"},
    )
    assert interop.detect_format(tmp_path / "sv.safetensors") == "steering-vectors"
    result = interop.import_file(lib, tmp_path / "sv.safetensors", model=FP)
    assert result.warnings == []
    vector = lib.load("sv")
    assert vector.layer_ids == [3, 5]  # their layer l = block l's output = our l+1
    assert torch.equal(vector.layers[5], torch.full((16,), 4.0))
    assert vector.provenance["import"]["source_format"].startswith("steering-vectors")
    assert vector.fingerprint == FP


@pytest.mark.parametrize(
    ("tensors", "metadata", "match"),
    [
        ({"3": torch.ones(16)}, {"layer_type": "attention"}, "decoder_block"),
        ({"3": torch.ones(16, dtype=torch.int32)}, None, "float"),
        ({"3": torch.full((16,), float("nan"))}, None, "NaN"),
        ({"3": torch.ones(2, 16)}, None, "shape"),
        ({"3": torch.ones(16), "4": torch.ones(8)}, None, "different sizes"),
        ({"layer_activations.2": torch.ones(16), "model.weight": torch.ones(16)}, None, "layer number"),
    ],
)
def test_steering_vectors_refuses_bad_files(tmp_path, tensors, metadata, match):
    save_file(tensors, tmp_path / "bad.safetensors", metadata=metadata)
    with pytest.raises(VectorFileError, match=match):
        repeng_module.read_steering_vectors(tmp_path / "bad.safetensors")


def test_our_own_safetensors_import_is_validated(lib, tmp_path):
    engine.save_vector(direction_vector(), tmp_path / "mine.safetensors")
    assert interop.detect_format(tmp_path / "mine.safetensors") == "vector"
    interop.import_file(lib, tmp_path / "mine.safetensors")
    assert lib.load("mine").provenance["import"]["source_format"] == "actadd-studio vector"
    (tmp_path / "broken.safetensors").write_bytes((tmp_path / "mine.safetensors").read_bytes()[:-10])
    with pytest.raises(VectorFileError):
        interop.import_file(lib, tmp_path / "broken.safetensors")
    assert lib.list().keys() == ["mine"]


def test_import_refuses_unknown_extensions_and_bad_names(lib, tmp_path):
    (tmp_path / "x.pt").write_bytes(b"\x80\x04")
    with pytest.raises(LibraryError, match="format"):
        interop.import_file(lib, tmp_path / "x.pt")
    np.savez(tmp_path / ".hidden.npz", **{"1": np.ones(4, np.float32)})
    with pytest.raises(LibraryError, match="--name"):
        interop.import_file(lib, tmp_path / ".hidden.npz")
    interop.import_file(lib, tmp_path / ".hidden.npz", name="visible")
    with pytest.raises(LibraryError, match="already exists"):
        interop.import_file(lib, tmp_path / ".hidden.npz", name="visible")


# ---- bundles -----------------------------------------------------------------------------------------------
def test_bundle_round_trip_of_a_collection(lib, love, tmp_path):
    lib.save(love, "love", collection="moods")
    lib.save(direction_vector(), "calm", collection="moods")
    lib.save(direction_vector(layers=(3,)), "elsewhere")
    keys = [e.key for e in lib.list(collection="moods")]
    result = interop.export(lib, keys, tmp_path / "moods.zip")
    assert sorted(result.keys) == ["moods/calm", "moods/love"]
    with zipfile.ZipFile(result.path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest["format"] == "actadd-studio/bundle" and manifest["format_version"] == 1
        files = {r["file"] for r in manifest["vectors"]}
        assert files == {"vectors/moods/love.safetensors", "vectors/moods/calm.safetensors"}
        for record in manifest["vectors"]:
            assert record["sha256"] == hashlib.sha256(archive.read(record["file"])).hexdigest()

    other = Library(tmp_path / "other")
    imported = interop.import_file(other, result.path)
    assert sorted(k for k, _ in imported.saved) == ["moods/calm", "moods/love"]
    back = other.load("moods/love")
    assert all(torch.equal(back.layers[l], love.layers[l]) for l in love.layer_ids)
    assert back.prompts == love.prompts and back.fingerprint == love.fingerprint
    assert back.provenance["pad_token"] == love.provenance["pad_token"]
    assert back.provenance["import"]["source_format"] == "actadd-studio bundle"

    # into another collection; collisions import nothing unless forced
    interop.import_file(other, result.path, collection="shared")
    assert sorted(other.list().keys()) == ["moods/calm", "moods/love", "shared/calm", "shared/love"]
    with pytest.raises(LibraryError, match="nothing imported"):
        interop.import_file(other, result.path)
    interop.import_file(other, result.path, overwrite=True)


def test_bundle_of_one_vector_with_a_new_name(lib, tmp_path):
    lib.save(direction_vector(), "v")
    interop.export(lib, "v", tmp_path / "v.zip")
    other = Library(tmp_path / "other")
    interop.import_file(other, tmp_path / "v.zip", name="renamed")
    assert other.list().keys() == ["renamed"]


def make_bundle(
    path: Path,
    members: dict[str, bytes],
    manifest: dict | None = None,
    symlink: str | None = None,
    raw_manifest: bytes | None = None,
):
    with zipfile.ZipFile(path, "w") as archive:
        if manifest is not None:
            archive.writestr("manifest.json", json.dumps(manifest))
        if raw_manifest is not None:
            archive.writestr("manifest.json", raw_manifest)
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def manifest_for(entries: list[tuple[str, str, str, bytes]]) -> dict:
    return {
        "format": "actadd-studio/bundle",
        "format_version": 1,
        "vectors": [
            {"file": f, "name": n, "collection": c, "sha256": hashlib.sha256(d).hexdigest()}
            for f, n, c, d in entries
        ],
    }


@pytest.fixture
def vector_bytes() -> bytes:
    return engine.vector.vector_to_bytes(direction_vector())


@pytest.mark.parametrize(
    ("member", "name", "collection"),
    [
        ("../evil.safetensors", "evil", ""),
        ("vectors/../../evil.safetensors", "evil", ""),
        ("/etc/evil.safetensors", "evil", ""),
        ("C:/evil.safetensors", "evil", ""),
        ("vectors\\..\\evil.safetensors", "evil", ""),
        ("vectors/ok.safetensors", "../evil", ""),
        ("vectors/ok.safetensors", "ok", ".."),
        ("vectors/ok.safetensors", "ok", "a/b"),
        ("vectors/ok.safetensors", ".hidden", ""),
    ],
)
def test_bundle_refuses_path_traversal(lib, tmp_path, vector_bytes, member, name, collection):
    path = make_bundle(
        tmp_path / "evil.zip",
        {member: vector_bytes},
        manifest_for([(member, name, collection, vector_bytes)]),
    )
    with pytest.raises(VectorFileError):
        interop.import_file(lib, path)
    assert not lib.root.exists() or lib.list().keys() == []
    assert not (tmp_path / "evil.safetensors").exists()


def test_bundle_refuses_symlinks_bombs_and_lies(lib, tmp_path, vector_bytes, monkeypatch):
    ok = ("vectors/v.safetensors", "v", "", vector_bytes)
    cases = {
        "symlink": make_bundle(tmp_path / "s.zip", {ok[0]: vector_bytes}, manifest_for([ok]), symlink="link"),
        "no manifest": make_bundle(tmp_path / "m.zip", {ok[0]: vector_bytes}),
        "bad manifest": make_bundle(tmp_path / "b.zip", {ok[0]: vector_bytes}, {"format": "other"}),
        "missing member": make_bundle(tmp_path / "x.zip", {}, manifest_for([ok])),
        "sha mismatch": make_bundle(
            tmp_path / "h.zip", {ok[0]: vector_bytes}, manifest_for([(*ok[:3], b"other")])
        ),
        "not a vector": make_bundle(tmp_path / "n.zip", {ok[0]: b"junk"}, manifest_for([(*ok[:3], b"junk")])),
        "listed twice": make_bundle(tmp_path / "t.zip", {ok[0]: vector_bytes}, manifest_for([ok, ok])),
        "deeply nested manifest": make_bundle(
            tmp_path / "d.zip", {ok[0]: vector_bytes}, None, raw_manifest=b"[" * 100_000
        ),
        "future version": make_bundle(
            tmp_path / "f.zip", {ok[0]: vector_bytes}, {**manifest_for([ok]), "format_version": 99}
        ),
    }
    (tmp_path / "notzip.zip").write_bytes(b"PK\x03\x04 not really")
    cases["not a zip"] = tmp_path / "notzip.zip"
    for label, path in cases.items():
        with pytest.raises(VectorFileError):
            interop.import_file(lib, path)
        assert not lib.root.exists() or lib.list().keys() == [], label

    # zip bomb: a small archive that declares a huge uncompressed size is refused before reading
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest_for([ok])))
        archive.writestr(ok[0], vector_bytes)
        archive.writestr("vectors/zeros.bin", b"\x00" * 5_000_000)
    assert (tmp_path / "bomb.zip").stat().st_size < 100_000
    with pytest.raises(VectorFileError, match="unpacks"):
        bundle_module.import_bundle(lib, tmp_path / "bomb.zip", max_total_bytes=1_000_000)
    # too many files
    many = {f"vectors/{i}.txt": b"" for i in range(30)}
    path = make_bundle(tmp_path / "many.zip", {ok[0]: vector_bytes, **many}, manifest_for([ok]))
    with pytest.raises(VectorFileError, match="files"):
        bundle_module.import_bundle(lib, path, max_files=10)
    assert not lib.root.exists() or lib.list().keys() == []


def test_bundle_member_larger_than_declared_is_refused(tmp_path, vector_bytes):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("vectors/v.safetensors", vector_bytes)
    info = zipfile.ZipFile(io.BytesIO(buffer.getvalue())).infolist()[0]
    info.file_size = 10  # lie about the size
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive, pytest.raises(VectorFileError):
        bundle_module._read_member(archive, info, 10**9, tmp_path / "x.zip")


def test_bundle_with_one_bad_vector_imports_nothing(lib, tmp_path, vector_bytes):
    good = ("vectors/good.safetensors", "good", "", vector_bytes)
    nan = engine.vector.vector_to_bytes(direction_vector()).replace(b"", b"")
    broken = nan[:-8] + np.array([np.nan, np.nan], np.float32).tobytes()  # NaN in the tensor data
    bad = ("vectors/bad.safetensors", "bad", "", broken)
    path = make_bundle(tmp_path / "mixed.zip", {good[0]: good[3], bad[0]: bad[3]}, manifest_for([good, bad]))
    with pytest.raises(VectorFileError, match="NaN"):
        interop.import_file(lib, path)
    assert not lib.root.exists() or lib.list().keys() == []


def test_gguf_import_other_integer_layer_count_types(tmp_path):
    path = write_control_vector(
        tmp_path / "u64.gguf", {1: np.ones(16, np.float32)}, layer_count=1, count_type="uint64"
    )
    vector, warnings = read_gguf(path)
    assert vector.layer_ids == [2]
    assert any("UINT64" in w for w in warnings)


def test_export_as_our_own_safetensors(lib, tmp_path):
    lib.save(direction_vector(), "v")
    result = interop.export(lib, "v", tmp_path / "copy.safetensors")
    copy = engine.load_vector(result.path)
    assert copy.layer_ids == [2, 4] and copy.prompts == direction_vector().prompts
    with pytest.raises(LibraryError, match="one vector"):
        interop.export(lib, ["v", "v"], tmp_path / "two.gguf")
    with pytest.raises(LibraryError, match="export format"):
        interop.export(lib, "v", tmp_path / "v.txt")
