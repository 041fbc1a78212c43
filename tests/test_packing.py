"""Packed captures (engine.packing) and the fused GELU (engine.fused_ops): same numbers, less work."""

from __future__ import annotations

import threading

import pytest
import torch
from tiny_models import ARCHITECTURES
from transformers import AutoModelForCausalLM
from transformers.activations import GELUTanh, NewGELUActivation

import engine.capture
from engine import (
    CancelledError,
    PromptPair,
    capture_mean_diff,
    encode,
    load_model,
    pair_differences,
    resid_pre,
)
from engine.fused_ops import fuse_activations
from engine.packing import pack_rows, packed_batches, supports_packing

PAIRS = [
    PromptPair("I love weddings", "I hate weddings and the rain"),
    PromptPair("Love", "Hate"),
    PromptPair("The team won the match and the fans cheered", "The team lost"),
    PromptPair("We ate pasta and bread", "We ate"),
    PromptPair("Calm", "Anger and cold weather on a long trip by train"),
]


def test_rows_wider_than_the_budget_run_one_per_pass():
    prompts = [[7] * 300, [8] * 280, [9] * 5, [9] * 6]
    batches = list(packed_batches(prompts, pad_id=0, row_tokens=128, batch_tokens=256))
    assert [tuple(b.input_ids.shape) for b in batches] == [(1, 300), (1, 280), (1, 11)]


def test_a_short_leftover_row_is_not_padded_up_to_full_rows():
    prompts = [[5] * 64] * 6 + [[6] * 20]  # three full 128-token rows and one of 20
    widths = [
        tuple(b.input_ids.shape) for b in packed_batches(prompts, pad_id=0, row_tokens=128, batch_tokens=256)
    ]
    assert widths == [(2, 128), (1, 128), (1, 20)]


def test_pack_rows_first_fit_keeps_every_prompt_once_within_the_row_budget():
    lengths = [5, 30, 7, 7, 12, 300, 6, 11, 9, 9, 8]
    rows = pack_rows(lengths, row_tokens=32)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    for row in rows:
        assert sum(lengths[i] for i in row) <= 32 or len(row) == 1  # a prompt over the budget runs alone
    assert [5] in rows  # the 300-token prompt
    assert len(rows) == 5  # 30 | 12+11+9 | 9+8+7+7 | 6+5 | 300: first fit by decreasing length


def test_packed_batches_restart_positions_and_point_at_each_prompt_s_last_token():
    prompts = [[100 + i] * n for i, n in enumerate([3, 9, 2, 5, 4, 7, 1])]
    batches = list(packed_batches(prompts, pad_id=0, row_tokens=10, batch_tokens=20))
    seen = [i for b in batches for i in b.prompts]
    assert sorted(seen) == list(range(len(prompts)))
    for batch in batches:
        rows, width = batch.input_ids.shape
        assert rows * width <= 20 and width <= 10
        for k, i in enumerate(batch.prompts):
            row, col = int(batch.last_row[k]), int(batch.last_col[k])
            n = len(prompts[i])
            assert batch.input_ids[row, col - n + 1 : col + 1].tolist() == prompts[i]
            assert batch.position_ids[row, col - n + 1 : col + 1].tolist() == list(range(n))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_batched_pair_differences_equal_each_prompt_run_alone(loaded_models, arch):
    """Packed where the model supports it, padded where not: the numbers are those of unpadded runs."""
    loaded = loaded_models[arch]
    layers = [1, len(loaded.blocks) - 1]
    batched = pair_differences(loaded, PAIRS, layers)
    for i, pair in enumerate(PAIRS):
        alone = {}
        for text in (pair.positive, pair.negative):
            acts = resid_pre(loaded, torch.tensor([encode(loaded.tokenizer, text)]), layers)
            alone[text] = {layer: acts[layer][0, -1] for layer in layers}
        for layer in layers:
            expected = alone[pair.positive][layer] - alone[pair.negative][layer]
            torch.testing.assert_close(batched[layer][i], expected, rtol=1e-4, atol=1e-4)


def test_packing_is_used_where_the_model_keeps_prompts_apart(loaded_models):
    assert supports_packing(loaded_models["gpt2"]) and supports_packing(loaded_models["llama"])
    # OPT derives its positions from the attention mask and ignores position ids: packing would give the
    # second prompt of a row the positions that follow the first.
    assert not supports_packing(loaded_models["opt"])


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_quantized_models_pack_too_and_match_running_alone(model_dirs, quantize):
    """bfloat16 compute rounds the two probe copies apart by ~1%: the probe allows for the precision."""
    loaded = load_model(model_dirs["llama"], device="cpu", quantize=quantize)
    assert supports_packing(loaded)
    batched = pair_differences(loaded, PAIRS, [2])[2]
    alone = pair_differences(loaded, PAIRS, [2], max_batch_tokens=1)[2]
    torch.testing.assert_close(batched, alone, rtol=0.05, atol=0.05 * float(alone.abs().max()))


def test_the_probe_refuses_a_model_that_lets_packed_prompts_attend_across(model_dirs):
    loaded = load_model(model_dirs["gpt2"], device="cpu")  # its own instance: verdicts are per model

    def full_mask(module, args, kwargs):  # as a model that builds a mask when given none would
        return args, {**kwargs, "attention_mask": torch.ones_like(kwargs["input_ids"])}

    loaded.model.register_forward_pre_hook(full_mask, with_kwargs=True)
    assert not supports_packing(loaded)
    batched = pair_differences(loaded, PAIRS, [2])[2]  # still right, through the padded path
    alone = pair_differences(loaded, PAIRS, [2], max_batch_tokens=1)[2]
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)


def test_a_model_whose_forward_refuses_position_ids_is_captured_padded(model_dirs):
    loaded = load_model(model_dirs["gpt2"], device="cpu")

    def no_positions(module, args, kwargs):
        if kwargs.get("position_ids") is not None:
            raise TypeError("forward() got an unexpected keyword argument 'position_ids'")

    loaded.model.register_forward_pre_hook(no_positions, with_kwargs=True)
    assert not supports_packing(loaded)
    batched = pair_differences(loaded, PAIRS, [2])[2]
    alone = pair_differences(loaded, PAIRS, [2], max_batch_tokens=1)[2]
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)


def test_many_varied_pairs_are_packed_but_one_pair_of_equal_prompts_is_padded(gpt2, monkeypatch):
    packed_calls: list[bool] = []
    real = engine.capture.resid_pre

    def spy(*args, **kwargs):
        packed_calls.append(kwargs.get("position_ids") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.capture, "resid_pre", spy)
    pair_differences(gpt2, PAIRS, [1])
    assert packed_calls and all(packed_calls)
    packed_calls.clear()
    pair_differences(gpt2, [PromptPair("I love rain", "I hate rain")], [1])
    assert packed_calls == [False]


def test_gpt2_gelu_is_fused_at_load_and_the_logits_do_not_change(model_dirs, gpt2, llama):
    kinds = {type(m) for m in gpt2.model.modules()}
    assert GELUTanh in kinds and NewGELUActivation not in kinds
    plain = AutoModelForCausalLM.from_pretrained(model_dirs["gpt2"], dtype=torch.float32).eval()
    assert any(type(m) is NewGELUActivation for m in plain.modules())
    ids = torch.tensor([encode(gpt2.tokenizer, "The team won the match and the fans cheered")])
    with torch.no_grad():
        torch.testing.assert_close(gpt2.model(ids).logits, plain(ids).logits, rtol=1e-5, atol=1e-5)
    assert fuse_activations(plain) == len(gpt2.blocks)  # one per MLP
    assert fuse_activations(llama.model) == 0  # SiLU is one kernel already


MANY = [PromptPair(f"I love the {w} and the calm sea", f"I hate the {w}") for w in "abcdefghijklmnopqrst"]


@pytest.mark.parametrize("arch", ["gpt2", "opt"])  # packed and padded
def test_capture_progress_counts_prompts_up_to_the_total(loaded_models, arch):
    seen: list[tuple[int, int]] = []
    capture_mean_diff(loaded_models[arch], MANY, 1, progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 1  # 40 prompts of 5-10 tokens in passes of up to 256 tokens
    assert all(total == 2 * len(MANY) for _, total in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 2 * len(MANY) and len(set(done)) == len(done)


def test_a_cancelled_capture_stops_after_the_current_batch(gpt2, monkeypatch):
    cancel = threading.Event()
    passes: list[int] = []
    real = engine.capture.resid_pre

    def counting(*args, **kwargs):
        passes.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.capture, "resid_pre", counting)
    with pytest.raises(CancelledError, match="stopped after"):
        pair_differences(
            gpt2, MANY, [1], max_batch_tokens=32, progress=lambda d, t: cancel.set(), cancel=cancel
        )
    assert len(passes) == 1
    cancel.clear()
    cancel.set()
    with pytest.raises(CancelledError, match="after 0 of 40"):
        capture_mean_diff(gpt2, MANY, 1, cancel=cancel)
