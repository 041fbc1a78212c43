"""Streaming generation: deltas, cancellation, stop strings, seeds, penalties, effect, prompt checks.

Common random numbers and the per-token effect have their own files: test_common_random_numbers.py and
test_effect.py."""

from __future__ import annotations

import threading

import pytest
import torch

from engine import InvalidInputError, SamplingConfig, Steer, capture_actadd, generate, hook_count
from engine.sampling import FrequencyPenaltyProcessor

PROMPT = "I went up to my friend and said"


def test_streamed_deltas_add_up_to_the_final_text_per_row(gpt2):
    v = capture_actadd(gpt2, "Love", "Hate", 1)
    pieces: dict[int, list[str]] = {0: [], 1: []}
    result = generate(
        gpt2,
        PROMPT,
        [[], [Steer(v, 4.0)]],
        SamplingConfig(max_new_tokens=12, seed=3),
        on_token=lambda e: pieces[e.row].append(e.text),
    )
    for row in (0, 1):
        assert "".join(pieces[row]) == result.rows[row].text
        assert len(result.rows[row].token_ids) == 12
        assert result.rows[row].text == gpt2.tokenizer.decode(
            result.rows[row].token_ids, skip_special_tokens=True
        )
    assert result.rows[0].prompt_token_ids[0] == gpt2.tokenizer.bos_token_id
    assert result.tokens_per_second > 0 and hook_count(gpt2.blocks) == 0


def test_cancel_stops_mid_stream(gpt2):
    cancel = threading.Event()
    steps = []

    def on_token(event):
        steps.append(event.step)
        if event.step == 2:
            cancel.set()

    result = generate(gpt2, PROMPT, None, SamplingConfig(max_new_tokens=40), cancel=cancel, on_token=on_token)
    assert result.cancelled and result.rows[0].finish_reason == "cancelled"
    assert 3 <= len(result.rows[0].token_ids) < 40
    assert hook_count(gpt2.blocks) == 0


def test_same_seed_same_text_and_greedy_ignores_seed(gpt2):
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=7)
    a = generate(gpt2, PROMPT, None, sampling).rows[0].token_ids
    b = generate(gpt2, PROMPT, None, sampling).rows[0].token_ids
    c = (
        generate(gpt2, PROMPT, None, SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=8))
        .rows[0]
        .token_ids
    )
    assert a == b and a != c
    g1 = (
        generate(gpt2, PROMPT, None, SamplingConfig(temperature=0, max_new_tokens=6, seed=1))
        .rows[0]
        .token_ids
    )
    g2 = (
        generate(gpt2, PROMPT, None, SamplingConfig(temperature=0, max_new_tokens=6, seed=2))
        .rows[0]
        .token_ids
    )
    assert g1 == g2


def test_stop_strings_cut_the_text_and_never_stream_past_it(gpt2):
    free = generate(gpt2, PROMPT, None, SamplingConfig(temperature=0, max_new_tokens=20)).rows[0].text
    stop = free[5:8]
    assert stop and stop in free
    streamed = []
    result = generate(
        gpt2,
        PROMPT,
        None,
        SamplingConfig(temperature=0, max_new_tokens=20, stop=(stop,)),
        on_token=lambda e: streamed.append(e.text),
    )
    row = result.rows[0]
    assert row.finish_reason == "stop"
    assert row.text == free[: free.index(stop)]
    assert "".join(streamed) == row.text


def test_frequency_penalty_subtracts_counts_of_generated_tokens():
    processor = FrequencyPenaltyProcessor(penalty=1.5, prompt_length=2)
    ids = torch.tensor([[9, 9, 3, 3, 4]])  # prompt [9, 9], generated [3, 3, 4]
    scores = processor(ids, torch.zeros(1, 10))
    assert scores[0, 3] == -3.0 and scores[0, 4] == -1.5 and scores[0, 9] == 0.0


def test_paper_sampling_preset():
    paper = SamplingConfig.paper()
    assert (paper.temperature, paper.top_p, paper.frequency_penalty, paper.seed) == (1.0, 0.3, 1.0, 0)


def test_effect_reports_kl_against_the_unsteered_model_on_the_same_context(gpt2):
    v = capture_actadd(gpt2, "Love", "Hate", 1).to_direction()
    events = []
    generate(
        gpt2,
        PROMPT,
        [[], [Steer(v, 6.0, mode="all")]],
        SamplingConfig(temperature=0, max_new_tokens=4),
        on_token=events.append,
        effect_rows=[1],
    )
    steered = [e for e in events if e.row == 1]
    assert all(e.kl is not None and e.kl > 0 for e in steered)
    assert all(e.kl is None for e in events if e.row == 0)  # only measured rows get a shadow row
    assert len(steered[0].top) == 5 and all(0 <= p <= 1 for _, p in steered[0].top)


def test_prompt_checks(gpt2):
    long_vector = capture_actadd(gpt2, "I talk about weddings constantly and more", "I do not", 1)
    with pytest.raises(InvalidInputError, match=r"has \d+ tokens but the prompt has only \d+"):
        generate(gpt2, "Hi", [[Steer(long_vector, 1.0)]], SamplingConfig(max_new_tokens=2))
    for empty in ("", "   "):
        with pytest.raises(InvalidInputError, match="empty"):
            generate(gpt2, empty, None, SamplingConfig(max_new_tokens=2))
    for bad in (
        SamplingConfig(temperature=float("nan")),
        SamplingConfig(top_p=0),
        SamplingConfig(max_new_tokens=0),
    ):
        with pytest.raises(InvalidInputError):
            generate(gpt2, PROMPT, None, bad)
    with pytest.raises(InvalidInputError, match="chat template"):
        generate(gpt2, PROMPT, None, SamplingConfig(max_new_tokens=2), chat=True)


def test_generation_is_clipped_to_the_context_window(gpt2):
    result = generate(gpt2, PROMPT, None, SamplingConfig(temperature=0, max_new_tokens=500))
    n_positions = gpt2.model.config.n_positions
    assert len(result.rows[0].prompt_token_ids) + len(result.rows[0].token_ids) <= n_positions
