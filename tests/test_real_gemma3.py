"""The engine on real pretrained weights: Gemma-3-270M (gemma3, Q4_K_M GGUF), opened from the .gguf.

One float32 model is shared by the module. The reference checks use whatever BOS rule engine.tokens applies
(each test first asserts that the reference tokenizes its texts exactly as the engine does).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from reference_actadd import reference_greedy, reference_ids, reference_vector

from engine import SamplingConfig, Steer, capture_actadd, encode, generate, load_model
from engine.capture import resid_pre

GREEDY = SamplingConfig(temperature=0, max_new_tokens=8)
PROMPT = "I went up to my friend and said"


@pytest.fixture(scope="module")
def gemma(gemma3_gguf):
    return load_model(gemma3_gguf, device="cpu", dtype="float32")


def test_opened_from_the_gguf(gemma):
    info = gemma.info
    assert (info.architecture, info.n_layers, info.hidden_size) == ("gemma3_text", 18, 640)
    assert gemma.model.get_input_embeddings().weight.shape[0] == 262144
    assert info.source.endswith(".gguf") and Path(info.path, "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("positive", "negative", "layer", "coeff"),
    [("Love", "Hate", 4, 2.0), pytest.param(" weddings", " ", 8, 4.0, marks=pytest.mark.slow)],
)
def test_capture_and_steering_match_the_reference(gemma, positive, negative, layer, coeff):
    model, tokenizer = gemma.model, gemma.tokenizer
    for text in (positive, negative, PROMPT):
        assert reference_ids(tokenizer, text) == encode(tokenizer, text), "the reference's BOS rule differs"
    vector = capture_actadd(gemma, positive, negative, layer)
    expected = reference_vector(model, tokenizer, positive, negative, layer)
    scale = float(expected.norm())
    torch.testing.assert_close(vector.layers[layer], expected, rtol=1e-4, atol=1e-5 * scale)
    rows = generate(gemma, PROMPT, [[], [Steer(vector, coeff)]], GREEDY).rows
    assert rows[0].token_ids == reference_greedy(model, tokenizer, PROMPT, None, layer, 0.0, 8)
    assert rows[1].token_ids == reference_greedy(model, tokenizer, PROMPT, expected, layer, coeff, 8)
    assert rows[0].text.strip()  # real text, not an empty or broken decode


def test_gemmas_own_bos_and_embedding_scaling(gemma):
    tokenizer = gemma.tokenizer
    plain = tokenizer("Love")["input_ids"]
    assert plain[0] == tokenizer.bos_token_id and tokenizer.bos_token == "<bos>"  # the tokenizer adds it
    ids = encode(tokenizer, "Love")
    assert ids == plain and ids.count(tokenizer.bos_token_id) == 1  # never doubled
    # Gemma scales its embeddings by sqrt(hidden) before block 0; resid_pre at layer 0 includes it.
    rows = gemma.model.get_input_embeddings().weight[torch.tensor(ids)]  # [seq, hidden]
    expected = rows * torch.tensor(math.sqrt(640.0), dtype=rows.dtype)
    ours = resid_pre(gemma, torch.tensor([ids]), [0])[0][0]
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-5)
    with torch.no_grad():
        reference = gemma.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[0][0]
    assert torch.equal(ours, reference)


def test_the_dequantized_folder_opens_as_a_plain_folder(gemma):
    folder = load_model(Path(gemma.info.path), device="cpu", dtype="float32")
    vector = capture_actadd(folder, "Love", "Hate", 4)
    assert torch.equal(vector.layers[4], capture_actadd(gemma, "Love", "Hate", 4).layers[4])
    assert (
        generate(folder, PROMPT, [[]], GREEDY).rows[0].token_ids
        == generate(gemma, PROMPT, [[]], GREEDY).rows[0].token_ids
    )


@pytest.mark.slow
def test_every_weight_is_what_transformers_own_gguf_load_gives(gemma, gemma3_gguf):
    from transformers import AutoModelForCausalLM

    path = gemma3_gguf
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    theirs = dict(reference.named_parameters())
    ours = dict(gemma.model.named_parameters())
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
