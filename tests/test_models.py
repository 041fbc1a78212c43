"""Model loading through the real path: architectures, quantization on CPU, and every bad-folder message."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tiny_models import ARCHITECTURES
from torch import nn

from engine import (
    ModelLoadError,
    SamplingConfig,
    Steer,
    UnsupportedArchitectureError,
    capture_actadd,
    generate,
    load_model,
    memory_report,
)
from engine.architectures import BLOCK_PATHS, find_blocks
from engine.generation import prompt_ids


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_architecture_table_finds_blocks_and_fingerprint(loaded_models, arch):
    loaded = loaded_models[arch]
    assert loaded.info.architecture == arch and loaded.layout.path == BLOCK_PATHS[arch]
    assert loaded.info.n_layers == len(loaded.blocks) > 0 and loaded.info.hidden_size == 64
    assert loaded.fingerprint.hidden_size == 64 and len(loaded.fingerprint.id) == 12


def test_fingerprint_is_stable_across_loads_and_ignores_the_folder_name(model_dirs, tmp_path, gpt2):
    copy = shutil.copytree(model_dirs["gpt2"], tmp_path / "renamed")
    again = load_model(copy, device="cpu")
    assert again.fingerprint.id == gpt2.fingerprint.id and again.fingerprint.model_hint == "renamed"


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_quantized_loading_on_cpu_captures_and_steers(model_dirs, quantize):
    loaded = load_model(model_dirs["llama"], quantize=quantize, device="cpu")
    linear = type(loaded.model.model.layers[0].self_attn.q_proj).__name__
    assert linear == {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[quantize]
    assert loaded.info.quantize == quantize
    vector = capture_actadd(loaded, "Love", "Hate", 1)
    assert torch.isfinite(vector.layers[1]).all() and vector.layers[1].abs().sum() > 0
    result = generate(
        loaded,
        "I went up to my friend",
        [[], [Steer(vector, 8.0)]],
        SamplingConfig(temperature=0, max_new_tokens=6),
    )
    assert all(len(r.token_ids) == 6 for r in result.rows)
    assert result.rows[0].token_ids != result.rows[1].token_ids
    report = memory_report(loaded)
    assert report["rss_mb"] > 0 and report["weights_mb"] > 0


def test_chat_template_toggle(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "chatty")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}<|endoftext|>User: {{ m['content'] }}\nAssistant:{% endfor %}"
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = load_model(folder, device="cpu")
    assert loaded.info.has_chat_template
    ids = prompt_ids(loaded, "Hello there", chat=True)
    assert loaded.tokenizer.decode(ids).endswith("User: Hello there\nAssistant:")


# ---- bad model folders: each gets a clear message naming the file at fault -------------------------
def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_model(tmp_path / "nope")
    afile = tmp_path / "weights.bin"
    afile.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(afile)
    with pytest.raises(ModelLoadError, match="not a local folder and not in the local model cache"):
        load_model("someone/unknown-model")


def test_missing_or_invalid_config(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"config\.json is not valid JSON"):
        load_model(folder)


def test_a_wrongly_typed_config_value_names_config_json(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "typed")
    config = json.loads((folder / "config.json").read_text())
    config["n_layer"] = "three"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"config\.json has an invalid value") as info:
        load_model(folder, device="cpu")
    assert "tokenizer" not in str(info.value)


def test_remote_code_is_refused_unless_opted_in(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil_net", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="trust_remote_code") as info:
        load_model(folder)
    assert "config.json" in str(info.value) and "could do anything" in str(info.value)


def test_unknown_architecture(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "odd")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "frobnicator"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match="frobnicator"):
        load_model(folder)

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "odd", "hidden_size": 8})()
            self.stack = nn.ModuleList([nn.Linear(8, 8)])

    with pytest.raises(UnsupportedArchitectureError, match=r"'odd'.*model\.layers"):
        find_blocks(Odd())
    assert find_blocks(Odd(), override="stack").path == "stack"


def test_truncated_weights_file(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "half")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors.*truncated or corrupt"):
        load_model(folder, device="cpu")


def test_tokenizer_that_does_not_match_the_vocabulary(model_dirs, tmp_path):
    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "mismatch")
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 50
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").unlink()
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    with pytest.raises(ModelLoadError, match=r"tokenizer.*400 tokens.*50 rows"):
        load_model(folder, device="cpu")


def test_model_larger_than_the_memory_budget_fails_cleanly(model_dirs, gpt2):
    with pytest.raises(ModelLoadError, match=r"does not fit|not enough memory"):
        load_model(model_dirs["gpt2"], device="auto", max_memory={"cpu": 1000})
    # The previously loaded model is untouched and still works.
    assert len(generate(gpt2, "Hello", None, SamplingConfig(max_new_tokens=2)).rows[0].token_ids) == 2


def test_bad_option_values():
    with pytest.raises(ModelLoadError, match="quantize must be one of"):
        load_model("demo", quantize="3bit")


def test_a_hub_id_already_in_the_local_cache_loads_offline(model_dirs, tmp_path, monkeypatch):
    """`org/name` resolves through the Hugging Face cache layout without any network access."""
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--someone--tiny-gpt2" / "snapshots" / "0123abcd"
    shutil.copytree(model_dirs["gpt2"], snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_model("someone/tiny-gpt2", device="cpu")
    assert loaded.info.path == str(snapshot) and loaded.info.architecture == "gpt2"
