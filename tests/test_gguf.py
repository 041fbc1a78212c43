"""Opening .gguf files: bit-exact conversion, the conversion cache, cancel, 4-bit, and every refusal."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import gguf
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf_models import Shape, write_gguf, write_metadata_only

from engine import (
    CancelledError,
    ModelLoadError,
    SamplingConfig,
    Steer,
    capture_actadd,
    generate,
    load_model,
    model_cache,
)
from engine.gguf_convert import check_gguf, open_gguf, supported_architectures

# arch -> (quantization, tied embeddings): llama's q/k permute, GPT-2's transposes and parked lm_head,
# qwen2's biases; Q4_1 is SmolLM2's quantization.
FILES = {"llama": (Q.Q8_0, False), "gpt2": (Q.Q8_0, True), "qwen2": (Q.Q4_1, False)}


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gguf")
    for arch, (qtype, tied) in FILES.items():
        write_gguf(folder / f"tiny-{arch}.gguf", arch, qtype=qtype, tied=tied)
    return folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ACTADD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ACTADD_GGUF_CACHE_GB", raising=False)
    return tmp_path / "cache"


@pytest.mark.parametrize("arch", list(FILES))
def test_float32_weights_are_bit_for_bit_transformers_own_gguf_load(gguf_dir, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = f"tiny-{arch}.gguf"
    loaded = load_model(gguf_dir / name, device="cpu", dtype="float32")
    reference = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=torch.float32)
    ours = dict(loaded.model.named_parameters())
    theirs = dict(reference.named_parameters())
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key].dtype == torch.float32 and torch.equal(ours[key], value), key
    assert any(p.abs().sum() > 0 for p in theirs.values())
    ignored = {"_name_or_path", "quantization_config", "dtype", "transformers_version"}
    config, expected = loaded.model.config.to_dict(), reference.config.to_dict()
    assert {k: v for k, v in config.items() if k not in ignored} == {
        k: v for k, v in expected.items() if k not in ignored
    }
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name)
    text = "I love weddings, the bride and the groom."
    assert loaded.tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.tokenizer.bos_token, loaded.tokenizer.eos_token) == (
        tokenizer.bos_token,
        tokenizer.eos_token,
    )
    assert loaded.info.architecture == arch and loaded.info.source == str(gguf_dir / name)
    assert loaded.fingerprint.model_hint == f"tiny-{arch}"


def test_a_gguf_captures_and_steers(gguf_dir):
    loaded = load_model(gguf_dir / "tiny-llama.gguf", device="cpu")
    vector = capture_actadd(loaded, "Love", "Hate", 1)
    result = generate(
        loaded,
        "I went up to my friend",
        [[], [Steer(vector, 50.0)]],
        SamplingConfig(temperature=0, max_new_tokens=6),
    )
    assert all(len(row.token_ids) == 6 for row in result.rows)
    assert result.rows[0].token_ids != result.rows[1].token_ids


def test_conversion_is_cached_and_keyed_by_the_file(gguf_dir, tmp_path, cache):
    source = tmp_path / "model.gguf"
    source.write_bytes((gguf_dir / "tiny-llama.gguf").read_bytes())
    stages: list[tuple[str, float]] = []
    first = load_model(source, device="cpu", progress=lambda stage, f: stages.append((stage, f)))
    converting = [f for stage, f in stages if stage == "converting"]
    assert converting and converting == sorted(converting) and converting[-1] == 1.0
    folder = Path(first.info.path)
    assert folder.parent == cache / "converted" and (folder / "model.safetensors").is_file()
    written = (folder / "model.safetensors").stat().st_mtime_ns

    stages.clear()
    again = load_model(source, device="cpu", progress=lambda stage, f: stages.append((stage, f)))
    assert again.info.path == str(folder) and (folder / "model.safetensors").stat().st_mtime_ns == written
    assert [f for stage, f in stages if stage == "converting"] == [1.0]  # reused, not converted

    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))  # "edited"
    changed = load_model(source, device="cpu")
    assert changed.info.path != str(folder)
    bf16 = load_model(source, device="cpu", dtype="bfloat16")
    assert bf16.info.path not in (str(folder), changed.info.path) and bf16.info.dtype == "bfloat16"
    assert not [p for p in (cache / "converted").iterdir() if p.name.startswith(".tmp-")]


def test_least_recently_used_conversions_are_evicted_under_the_cap(gguf_dir, monkeypatch, cache):
    def size(folder: Path) -> int:
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    paths = {}
    for age, arch in enumerate(("qwen2", "gpt2")):  # qwen2 used longest ago
        paths[arch] = open_gguf(gguf_dir / f"tiny-{arch}.gguf")
        os.utime(paths[arch] / ".last_used", (1_000_000 + age, 1_000_000 + age))
    monkeypatch.setenv("ACTADD_GGUF_CACHE_GB", str((size(paths["gpt2"]) + 1.5 * size(paths["qwen2"])) / 1e9))
    newest = open_gguf(gguf_dir / "tiny-llama.gguf")
    assert newest.is_dir() and paths["gpt2"].is_dir() and not paths["qwen2"].exists()
    monkeypatch.setenv("ACTADD_GGUF_CACHE_GB", "0")
    assert open_gguf(gguf_dir / "tiny-qwen2.gguf").is_dir()  # the folder just made is never evicted
    assert [p.name.split("-")[1] for p in (cache / "converted").iterdir()] == ["qwen2"]


def test_cancel_stops_the_conversion_and_leaves_nothing(gguf_dir, cache):
    cancel = threading.Event()

    def progress(stage: str, fraction: float) -> None:
        if stage == "converting" and fraction > 0.3:
            cancel.set()

    with pytest.raises(CancelledError):
        load_model(gguf_dir / "tiny-llama.gguf", device="cpu", progress=progress, cancel=cancel)
    assert list((cache / "converted").iterdir()) == []
    assert load_model(gguf_dir / "tiny-llama.gguf", device="cpu").info.n_layers == 2  # still opens after


def test_an_exception_from_the_progress_callback_passes_through_unchanged(gguf_dir, cache):
    """The GUI stops a load by raising its own exception from the progress callback."""

    class Stop(Exception):
        pass

    def progress(stage: str, fraction: float) -> None:
        if stage == "converting" and fraction > 0.5:
            raise Stop

    with pytest.raises(Stop):
        load_model(gguf_dir / "tiny-gpt2.gguf", device="cpu", progress=progress)
    assert list((cache / "converted").iterdir()) == []


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_bitsandbytes_quantization_of_a_gguf_on_cpu(gguf_dir, quantize):
    loaded = load_model(gguf_dir / "tiny-llama.gguf", device="cpu", quantize=quantize)
    linear = type(loaded.model.model.layers[0].self_attn.q_proj).__name__
    assert linear == {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[quantize]
    assert loaded.info.quantize == quantize and loaded.info.dtype == "bfloat16"
    vector = capture_actadd(loaded, "Love", "Hate", 1)
    result = generate(
        loaded, "I went up", [[], [Steer(vector, 8.0)]], SamplingConfig(temperature=0, max_new_tokens=4)
    )
    assert all(len(row.token_ids) == 4 for row in result.rows)


def _truncated(folder: Path, source: Path) -> Path:
    data = source.read_bytes()
    path = folder / "truncated.gguf"
    path.write_bytes(data[: len(data) - 1000])
    return path


def _header_cut(folder: Path, source: Path) -> Path:
    path = folder / "header-cut.gguf"
    path.write_bytes(source.read_bytes()[:300])
    return path


STR = gguf.GGUFValueType.STRING
U32 = gguf.GGUFValueType.UINT32
BAD_FILES = {
    "another architecture": (
        lambda d, s: write_metadata_only(d / "rwkv.gguf", "rwkv6", {}),
        ["'rwkv6'", "llama", "gemma3"],
    ),
    "a LoRA adapter": (
        lambda d, s: write_metadata_only(
            d / "lora.gguf", "llama", {"general.type": ("adapter", STR), "adapter.type": ("lora", STR)}
        ),
        ["lora adapter", "'llama'"],
    ),
    "a control vector": (
        lambda d, s: write_metadata_only(
            d / "cv.gguf", "controlvector", {"controlvector.layer_count": (2, U32)}
        ),
        ["control vector", "'controlvector'"],
    ),
    "a vision projector": (
        lambda d, s: write_metadata_only(
            d / "mmproj-model-f16.gguf",
            "clip",
            {"clip.has_vision_encoder": (True, gguf.GGUFValueType.BOOL), "general.type": ("mmproj", STR)},
        ),
        ["projector", "'clip'"],
    ),
    "a split file by name": (
        lambda d, s: write_gguf(d / "model-00001-of-00003.gguf", "llama"),
        ["split into 3 files", "'llama'", "merge"],
    ),
    "a split file by header": (
        lambda d, s: write_gguf(
            d / "first.gguf", "llama", extra={"split.count": (2, gguf.GGUFValueType.UINT16)}
        ),
        ["split into 2 files"],
    ),
    "a truncated file": (_truncated, ["truncated"]),
    "a file cut inside its header": (_header_cut, ["truncated or corrupt"]),
    "not a GGUF at all": (
        lambda d, s: (d / "fake.gguf").write_bytes(b"PK\x03\x04" + b"\0" * 64) and d / "fake.gguf",
        ["not a GGUF"],
    ),
    "an embedding model": (
        lambda d, s: write_metadata_only(d / "bert.gguf", "bert", {}),
        ["'bert'"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_every_unopenable_gguf_gets_one_clear_error(gguf_dir, tmp_path, case, cache, capsys):
    make, expected = BAD_FILES[case]
    path = make(tmp_path, gguf_dir / "tiny-llama.gguf")
    with pytest.raises(ModelLoadError) as info:
        load_model(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message and path.name in message
    for fragment in expected:
        assert fragment.lower() in message.lower(), (fragment, message)
    assert not (cache / "converted").exists() or list((cache / "converted").iterdir()) == []

    from engine.cli import main as cli_main

    code = cli_main(["generate", "--model", str(path), "--prompt", "hi", "--max-new-tokens", "1"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_supported_architectures_come_from_transformers():
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    supported = supported_architectures()
    assert {"llama", "gemma3", "qwen2", "gpt2"} <= set(supported) <= set(GGUF_SUPPORTED_ARCHITECTURES)
    assert "t5" not in supported  # transformers reads it, but it is no causal LM


def test_check_accepts_every_good_file(gguf_dir):
    for arch in FILES:
        assert len(check_gguf(gguf_dir / f"tiny-{arch}.gguf").header.tensors) > 0


def test_cli_generates_from_a_gguf(gguf_dir, capsys):
    import json

    from engine.cli import main as cli_main

    code = cli_main(
        [
            "generate",
            "--model",
            str(gguf_dir / "tiny-qwen2.gguf"),
            "--prompt",
            "I love",
            "--max-new-tokens",
            "3",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)


def test_cache_location_and_cap_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTADD_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("ACTADD_MODELS_DIR", raising=False)
    assert model_cache.converted_dir() == tmp_path / "c" / "converted"
    assert model_cache.models_dir() == tmp_path / "c" / "models"
    monkeypatch.setenv("ACTADD_GGUF_CACHE_GB", "1.5")
    assert model_cache.cache_cap_bytes() == 1_500_000_000
    monkeypatch.setenv("ACTADD_GGUF_CACHE_GB", "lots")
    assert model_cache.cache_cap_bytes() == int(model_cache.DEFAULT_CAP_GB * 1e9)
    monkeypatch.delenv("ACTADD_CACHE")
    assert model_cache.cache_root() == Path.home() / ".cache" / "actadd-studio"


def test_random_byte_files_of_the_benchmark_open(tmp_path):
    """The benchmark's files are random bytes in valid blocks; they must convert to finite weights."""
    shape = Shape(vocab=512, hidden=256, layers=1, heads=4, kv_heads=2, ffn=512)
    for qtype in (Q.Q8_0, Q.Q4_K):
        path = write_gguf(tmp_path / f"r-{qtype.name}.gguf", "llama", shape, qtype, random_bytes=True)
        loaded = load_model(path, device="cpu", dtype="float32")
        assert all(torch.isfinite(p).all() for p in loaded.model.parameters())
