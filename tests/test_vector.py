"""The vector file and `SteeringVector` arithmetic; every corrupt-file case raises VectorFileError."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from engine import (
    IncompatibleVectorError,
    ModelFingerprint,
    SteeringVector,
    VectorFileError,
    check_fits,
    combine,
    load_vector,
    read_header,
    save_vector,
)

FP = ModelFingerprint("gpt2", 4, 3, "abc", "tiny")


def make(layers=None, **kw) -> SteeringVector:
    layers = layers if layers is not None else {1: torch.arange(12, dtype=torch.float32).view(3, 4) / 10}
    return SteeringVector(
        layers=layers, fingerprint=FP, name="v", prompts={"positive": "Love", "negative": "Hate"}, **kw
    )


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    v = make(tags=("mood", "paper"), notes="ünïcode ✓", default_coeff=5.0, provenance={"pad_token_id": 220})
    path = save_vector(v, tmp_path / "v.safetensors")
    back = load_vector(path)
    assert torch.equal(back.layers[1], v.layers[1])
    assert (back.name, back.method, back.default_coeff, back.default_mode) == ("v", "actadd", 5.0, "front")
    assert back.fingerprint == FP and back.tags == ("mood", "paper") and back.notes == "ünïcode ✓"
    assert back.prompts == v.prompts and back.provenance == {"pad_token_id": 220}
    header = read_header(path)
    assert header.shapes == {1: [3, 4]} and header.fingerprint == FP
    with pytest.raises(FileExistsError):
        save_vector(v, path)
    save_vector(v * 2, path, overwrite=True)
    assert torch.equal(load_vector(path).layers[1], v.layers[1] * 2)


def test_arithmetic_and_combine():
    a = make()
    b = make({1: torch.ones(3, 4)})
    torch.testing.assert_close((2 * a - b).layers[1], 2 * a.layers[1] - 1)
    torch.testing.assert_close((-a).layers[1], -a.layers[1])
    assert combine([(0.5, a), (0.5, b)]).prompts["combined_from"][0]["coeff"] == 0.5
    with pytest.raises(IncompatibleVectorError, match="shapes differ"):
        a + make({1: torch.ones(2, 4)})
    with pytest.raises(IncompatibleVectorError, match="layers differ"):
        a + make({2: torch.ones(3, 4)})
    other = b.replace(fingerprint=ModelFingerprint("llama", 4, 3, "zzz", "other"))
    with pytest.raises(IncompatibleVectorError, match="different models"):
        a + other
    assert combine([(1, a), (1, other)], allow_other_model=True).shape == [3, 4]


def test_to_direction_mean_skips_the_zero_bos_position_or_takes_one_position():
    t = torch.tensor([[0.0, 0.0], [1.0, 3.0], [3.0, 5.0]])
    v = make({0: t})
    assert torch.equal(v.to_direction().layers[0], torch.tensor([2.0, 4.0]))
    assert torch.equal(v.to_direction(position=-1).layers[0], torch.tensor([3.0, 5.0]))
    assert v.to_direction().default_mode == "all" and not v.to_direction().is_positional
    with pytest.raises(IncompatibleVectorError, match="outside"):
        v.to_direction(position=3)


def test_check_fits_refuses_other_widths_and_warns_for_other_models():
    v = make()
    assert check_fits(v, FP) == []
    with pytest.raises(IncompatibleVectorError, match="hidden size 4, the model has 8"):
        check_fits(v, ModelFingerprint("gpt2", 8, 3, "abc"))
    with pytest.raises(IncompatibleVectorError, match="layer 1, the model has 1 layers"):
        check_fits(v, ModelFingerprint("gpt2", 4, 1, "abc"))
    other = ModelFingerprint("llama", 4, 3, "zzz", "other")
    with pytest.raises(IncompatibleVectorError, match="allow other models"):
        check_fits(v, other)
    assert "another model" in check_fits(v, other, allow_other_model=True)[0]


def test_nan_is_refused_on_save():
    with pytest.raises(VectorFileError, match="NaN"):
        from engine.vector import vector_to_bytes

        vector_to_bytes(make({0: torch.tensor([float("nan"), 1.0])}))


# ---- corrupt and hostile files -------------------------------------------------------------------
def _raw(path, header: dict, payload: bytes = b"") -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + payload)


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "random",
        "truncated",
        "huge_header",
        "overlap",
        "float64",
        "int8",
        "rank3",
        "zero_hidden",
        "nan",
        "inf",
        "non_utf8",
        "big_metadata",
        "foreign_key",
        "foreign_format",
        "no_tensors",
        "bad_fingerprint",
    ],
)
def test_corrupt_files_raise_vector_file_error_naming_the_file(tmp_path, case):
    path = tmp_path / f"{case}.safetensors"
    good = save_vector(make(), tmp_path / "good.safetensors").read_bytes()
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(bytes(range(256)) * 4)
    elif case == "truncated":
        path.write_bytes(good[: len(good) - 10])
    elif case == "huge_header":
        path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    elif case == "overlap":
        _raw(
            path,
            {
                "layers.0": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "layers.1": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            bytes(12),
        )
    elif case in ("float64", "int8", "rank3", "zero_hidden", "foreign_key"):
        tensors = {
            "float64": {"layers.0": torch.ones(4, dtype=torch.float64)},
            "int8": {"layers.0": torch.ones(4, dtype=torch.int8)},
            "rank3": {"layers.0": torch.ones(2, 2, 2)},
            "zero_hidden": {"layers.0": torch.ones(3, 0)},
            "foreign_key": {"model.embed.weight": torch.ones(4)},
        }[case]
        save_file(tensors, path)
    elif case in ("nan", "inf"):
        save_file({"layers.0": torch.tensor([1.0, float(case)])}, path)
    elif case == "non_utf8":
        blob = b'{"__metadata__": {"name": "\xff\xfe"}}'
        path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    elif case == "big_metadata":
        save_file({"layers.0": torch.ones(4)}, path, metadata={"notes": "x" * (2 * 1024**2)})
    elif case == "foreign_format":
        save_file({"layers.0": torch.ones(4)}, path, metadata={"format": "pt"})
    elif case == "no_tensors":
        _raw(path, {"__metadata__": {"name": "x"}})
    elif case == "bad_fingerprint":
        save_file({"layers.0": torch.ones(4)}, path, metadata={"fingerprint": '{"architecture": 1}'})
    with pytest.raises(VectorFileError) as info:
        load_vector(path)
    assert path.name in str(info.value)
