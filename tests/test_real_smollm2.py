"""The engine on real pretrained weights: SmolLM2-135M-Instruct (llama, Q4_1 GGUF), opened from the .gguf.

One float32 model is shared by the module. The checks against the independent reference
(tests/reference_actadd.py) use whatever BOS rule engine.tokens applies: each test first asserts that the
reference tokenizes its texts exactly as the engine does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reference_actadd import reference_greedy, reference_ids, reference_vector

from engine import SamplingConfig, Steer, capture_actadd, encode, generate, load_model
from engine.capture import resid_pre
from engine.generation import prompt_ids

GREEDY = SamplingConfig(temperature=0, max_new_tokens=8)


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return load_model(smollm2_gguf, device="cpu", dtype="float32")


def test_opened_from_the_gguf(smollm2):
    info = smollm2.info
    assert (info.architecture, info.n_layers, info.hidden_size) == ("llama", 30, 576)
    assert smollm2.model.get_input_embeddings().weight.shape == (49152, 576)
    assert smollm2.fingerprint.model_hint == "SmolLM2-135M-Instruct.Q4_1"
    assert info.source.endswith(".gguf") and Path(info.path, "model.safetensors").is_file()


def test_writes_real_english(smollm2):
    text = generate(
        smollm2, "The capital of France is", [[]], SamplingConfig(temperature=0, max_new_tokens=4)
    )
    assert text.rows[0].text.strip().startswith("Paris")


def test_capture_and_steering_match_the_reference(smollm2):
    model, tokenizer = smollm2.model, smollm2.tokenizer
    prompt, layer, coeff = "I went up to my friend and said", 6, 4.0
    for text in ("Love", "Hate", prompt):
        assert reference_ids(tokenizer, text) == encode(tokenizer, text), "the reference's BOS rule differs"
    vector = capture_actadd(smollm2, "Love", "Hate", layer)
    expected = reference_vector(model, tokenizer, "Love", "Hate", layer)
    scale = float(expected.norm())
    assert scale > 100  # real residual streams are large (about 800 here)
    torch.testing.assert_close(vector.layers[layer], expected, rtol=1e-4, atol=1e-5 * scale)
    steered = generate(smollm2, prompt, [[], [Steer(vector, coeff)]], GREEDY)
    ours = [row.token_ids for row in steered.rows]
    assert ours[0] == reference_greedy(model, tokenizer, prompt, None, layer, 0.0, len(ours[0]))
    assert ours[1] == reference_greedy(model, tokenizer, prompt, expected, layer, coeff, len(ours[1]))


def test_the_chat_template_renders(smollm2):
    assert smollm2.info.has_chat_template
    ids = prompt_ids(smollm2, "What is the capital of France?", chat=True)
    text = smollm2.tokenizer.decode(ids)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant")
    reply = generate(smollm2, "What is the capital of France?", [[]], GREEDY, chat=True).rows[0].text
    assert "Paris" in reply


def test_residual_norms_are_very_large_at_the_start(smollm2):
    """At layer 6 the first token's resid_pre is huge (~600) and ordinary tokens ~90 (real-models.md)."""
    ids = encode(smollm2.tokenizer, "Love is patient and kind, and the weather in the city was sunny today.")
    norms = resid_pre(smollm2, torch.tensor([ids]), [6])[6][0].norm(dim=-1)  # [seq]
    start, ordinary = float(norms[:2].max()), float(norms[2:].median())
    assert start > 400 and 50 < ordinary < 150 and start > 4 * ordinary


def test_the_dequantized_folder_opens_as_a_plain_folder_with_the_same_results(smollm2):
    folder = load_model(Path(smollm2.info.path), device="cpu", dtype="float32")
    assert folder.info.source == smollm2.info.path
    a = capture_actadd(folder, "Love", "Hate", 6).layers[6]
    b = capture_actadd(smollm2, "Love", "Hate", 6).layers[6]
    assert torch.equal(a, b)
    short = SamplingConfig(temperature=0, max_new_tokens=4)
    assert generate(folder, "The capital of France is", [[]], short).rows[0].token_ids == (
        generate(smollm2, "The capital of France is", [[]], short).rows[0].token_ids
    )


@pytest.mark.slow  # the slowest here (bitsandbytes on the CPU); tests/test_gguf.py covers 4-bit GGUFs in CI
def test_four_bit_from_the_gguf_on_cpu_generates(smollm2_gguf):
    loaded = load_model(smollm2_gguf, device="cpu", quantize="4bit")
    assert type(loaded.model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    vector = capture_actadd(loaded, "Love", "Hate", 6)
    rows = generate(loaded, "The capital of France is", [[], [Steer(vector, 2.0)]], GREEDY).rows
    assert all(len(row.token_ids) == 8 for row in rows)
    assert "Paris" in rows[0].text


@pytest.mark.slow
def test_every_weight_is_what_transformers_own_gguf_load_gives(smollm2, smollm2_gguf):
    from transformers import AutoModelForCausalLM

    path = smollm2_gguf
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    theirs = dict(reference.named_parameters())
    ours = dict(smollm2.model.named_parameters())
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
