"""ActAdd tokenization and the three capture methods."""

from __future__ import annotations

import pytest
import torch

from engine import (
    InvalidInputError,
    PromptPair,
    align_pair,
    alignment_preview,
    capture_actadd,
    capture_mean_diff,
    capture_pca,
    encode,
    space_token_id,
)
from engine.capture import capture_from_pairs, pair_differences
from engine.packing import length_batches


@pytest.mark.parametrize("arch", ["gpt2", "llama"])  # GPT-2 never adds BOS; the Llama-style one always does
def test_every_sequence_starts_with_exactly_one_bos(loaded_models, arch):
    tok = loaded_models[arch].tokenizer
    for text in ("Love", " weddings", "<|endoftext|>Love", "<|endoftext|><|endoftext|> hi"):
        ids = encode(tok, text)
        assert ids[0] == tok.bos_token_id
        assert ids[1] != tok.bos_token_id


def test_shorter_prompt_is_right_padded_with_the_space_token(gpt2):
    tok = gpt2.tokenizer
    pair = align_pair(tok, "I talk about weddings constantly", "Love")
    space = space_token_id(tok)
    assert tok.decode([space]) == " "
    assert len(pair.positive) == len(pair.negative) == pair.length
    assert pair.n_padded_positive == 0 and pair.n_padded_negative > 0
    assert pair.negative[-pair.n_padded_negative :] == [space] * pair.n_padded_negative
    assert pair.negative[: len(encode(tok, "Love"))] == encode(tok, "Love")
    preview = alignment_preview(tok, "I talk about weddings constantly", "Love")
    assert [row.negative_is_pad for row in preview].count(True) == pair.n_padded_negative
    assert preview[0].positive == preview[0].negative == tok.bos_token


def test_actadd_vector_is_the_resid_pre_difference_at_every_requested_layer(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate weddings", [0, 2], name="lh", tags=["mood"])
    pair = align_pair(gpt2.tokenizer, "Love", "Hate weddings")
    with torch.no_grad():
        hs = gpt2.model(torch.tensor([pair.positive, pair.negative]), output_hidden_states=True).hidden_states
    for layer in (0, 2):
        torch.testing.assert_close(vector.layers[layer], hs[layer][0] - hs[layer][1], rtol=1e-5, atol=1e-5)
    assert vector.shape == [pair.length, 64]
    assert vector.prompts == {"positive": "Love", "negative": "Hate weddings"}
    assert vector.provenance["pad_token_id"] == space_token_id(gpt2.tokenizer)
    assert vector.fingerprint == gpt2.fingerprint and vector.tags == ("mood",)


def test_mean_diff_batched_with_padding_equals_pairs_one_by_one(gpt2):
    pairs = [
        PromptPair("Love is patient", "Hate"),
        PromptPair("I love it", "I hate this cold rain"),
        PromptPair("Joy", "Sad"),
    ]
    batched = pair_differences(gpt2, pairs, [1], max_batch_tokens=4096)[1]  # one padded batch
    one_by_one = torch.cat(
        [pair_differences(gpt2, [p], [1], max_batch_tokens=1)[1] for p in pairs]
    )  # unpadded
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-4)
    vector = capture_mean_diff(gpt2, pairs, 1)
    torch.testing.assert_close(vector.layers[1], one_by_one.mean(0), rtol=1e-4, atol=1e-4)
    assert vector.shape == [64] and vector.default_mode == "all" and len(vector.prompts["pairs"]) == 3


def test_length_batches_respect_the_token_budget_and_keep_every_row_once():
    lengths = [5, 30, 7, 7, 12, 300, 6, 11, 9, 9, 8]
    batches = length_batches(lengths, max_batch_tokens=32)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) * longest <= 32 or len(batch) == 1  # a row over the budget runs alone
        assert [lengths[i] for i in batch] == sorted(lengths[i] for i in batch)
    assert lengths[batches[0][0]] == 5  # shortest first
    assert [[lengths[i] for i in b] for b in batches][-1] == [300]
    assert length_batches(lengths, max_batch_tokens=10_000) == [
        sorted(range(len(lengths)), key=lengths.__getitem__)
    ]


def test_pca_is_the_first_component_sign_aligned_with_the_mean(gpt2):
    pairs = [PromptPair(f"Love {w}", f"Hate {w}") for w in ("rain", "food", "trains", "the team", "weddings")]
    diffs = pair_differences(gpt2, pairs, [1])[1]
    vector = capture_pca(gpt2, pairs, 1)
    direction = vector.layers[1]
    component = torch.linalg.svd(diffs - diffs.mean(0), full_matrices=False).Vh[0]
    cosine = torch.nn.functional.cosine_similarity(direction, component, dim=0).abs()
    assert cosine > 0.9999
    assert torch.dot(direction, diffs.mean(0)) > 0
    with pytest.raises(InvalidInputError, match="at least 2"):
        capture_pca(gpt2, pairs[:1], 1)
    with pytest.raises(InvalidInputError, match="unknown pair method 'actadd'"):
        capture_from_pairs("actadd", gpt2, pairs, 1)


def test_capture_refuses_out_of_range_layers(gpt2):
    for bad in (-1, 3, 99):
        with pytest.raises(InvalidInputError, match="out of range"):
            capture_actadd(gpt2, "Love", "Hate", bad)
    with pytest.raises(InvalidInputError):
        capture_mean_diff(gpt2, [], 0)
