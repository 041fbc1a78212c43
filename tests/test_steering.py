"""The steering hooks: faithful ActAdd, modes, per-row batches, exact identities, live coefficients."""

from __future__ import annotations

import threading

import pytest
import torch
from reference_actadd import reference_greedy, reference_vector
from tiny_models import ARCHITECTURES

from engine import (
    IncompatibleVectorError,
    InvalidInputError,
    SamplingConfig,
    Steer,
    SteeringPlan,
    capture_actadd,
    encode,
    generate,
    hook_count,
)
from engine.capture import resid_pre

GREEDY = SamplingConfig(temperature=0, max_new_tokens=8)
PROMPT = "I went up to my friend and said"


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_matches_independent_reference_implementation(loaded_models, arch):
    """Capture and front injection agree with a from-the-paper reference, greedy, on every architecture."""
    loaded = loaded_models[arch]
    layer = 1
    for positive, negative, coeff in [
        ("Love", "Hate", 6.0),
        ("Intent to praise", "Hate", 3.0),
        (" weddings", " ", 8.0),
    ]:
        vector = capture_actadd(loaded, positive, negative, layer)
        expected = reference_vector(loaded.model, loaded.tokenizer, positive, negative, layer)
        torch.testing.assert_close(vector.layers[layer], expected, rtol=1e-4, atol=1e-4)
        assert torch.equal(vector.layers[layer][0], torch.zeros_like(vector.layers[layer][0])), "shared BOS"
        ours = generate(loaded, PROMPT, [[Steer(vector, coeff)]], GREEDY).rows[0].token_ids
        ref = reference_greedy(loaded.model, loaded.tokenizer, PROMPT, expected, layer, coeff, len(ours))
        assert ours == ref, (arch, positive)
        assert hook_count(loaded.blocks) == 0


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_coefficient_zero_is_bit_identical_to_no_steering(loaded_models, arch):
    loaded = loaded_models[arch]
    vector = capture_actadd(loaded, "Love", "Hate", [0, 1])
    ids = torch.tensor([encode(loaded.tokenizer, PROMPT)])
    with torch.no_grad():
        plain = loaded.model(ids).logits
        for mode in ("front", "all", "generated", "ablate"):
            plan = SteeringPlan([[Steer(vector, 0.0, mode=mode)]])
            with plan.apply(loaded.blocks):
                steered = loaded.model(ids).logits
            assert torch.equal(plain, steered), mode


def _block_inputs(loaded, layer: int, plan: SteeringPlan, ids: torch.Tensor, decode_steps: int = 2):
    """(before, after) the plan's hook: block `layer`'s input on the prompt pass and each cached decode step."""
    before: list[torch.Tensor] = []
    after: list[torch.Tensor] = []

    def recorder(into):
        def record(module, args, kwargs):
            into.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

        return record

    with plan.apply(loaded.blocks), torch.no_grad():
        block = loaded.blocks[layer]
        handles = [
            block.register_forward_pre_hook(recorder(before), with_kwargs=True, prepend=True),
            block.register_forward_pre_hook(recorder(after), with_kwargs=True),
        ]
        try:
            out = loaded.model(ids, use_cache=True)
            for _ in range(decode_steps):
                token = out.logits[:, -1:].argmax(-1)
                out = loaded.model(token, cache=out.past_key_values, use_cache=True)
        finally:
            for handle in handles:
                handle.remove()
    return list(zip(before, after, strict=True))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_modes_act_where_documented(loaded_models, arch):
    loaded = loaded_models[arch]
    layer, c = 1, 3.0
    actadd = capture_actadd(loaded, "Love", "Hate weddings", layer)
    direction = actadd.to_direction()
    ids = torch.tensor([encode(loaded.tokenizer, PROMPT)])
    n, vec, r = actadd.n_tokens, actadd.layers[layer], direction.layers[layer]

    (prompt, *decode) = _block_inputs(loaded, layer, SteeringPlan([[Steer(actadd, c, mode="front")]]), ids)
    torch.testing.assert_close(prompt[1][0, :n] - prompt[0][0, :n], c * vec)
    assert torch.equal(prompt[1][0, n:], prompt[0][0, n:])
    assert all(torch.equal(before, after) for before, after in decode), "front leaves decode steps alone"

    for before, after in _block_inputs(loaded, layer, SteeringPlan([[Steer(direction, c, mode="all")]]), ids):
        torch.testing.assert_close(after - before, (c * r).expand_as(before))

    (prompt, *decode) = _block_inputs(
        loaded, layer, SteeringPlan([[Steer(direction, c, mode="generated")]]), ids
    )
    assert torch.equal(prompt[0], prompt[1]), "the prompt is untouched"
    for before, after in decode:
        torch.testing.assert_close(after - before, (c * r).expand_as(before))

    r_hat = r / r.norm()
    for _, after in _block_inputs(loaded, layer, SteeringPlan([[Steer(direction, 1.0, mode="ablate")]]), ids):
        assert (after @ r_hat).abs().max() < 1e-3


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_per_row_batch_equals_rows_one_at_a_time(loaded_models, arch):
    loaded = loaded_models[arch]
    love = capture_actadd(loaded, "Love", "Hate", 1)
    topic = capture_actadd(loaded, " weddings", " ", 0)
    rows = [
        [],
        [Steer(love, 4.0)],
        [Steer(love, -4.0), Steer(topic, 2.0)],
        [Steer(love.to_direction(), 1.5, mode="all")],
    ]
    # Different prompt lengths per row exercise left padding and per-row front offsets.
    prompts = [PROMPT, "Hello there, friend", PROMPT + " that the weather", "The team won"]
    batched = generate(loaded, prompts, rows, GREEDY)
    for i, (prompt, steers) in enumerate(zip(prompts, rows, strict=True)):
        single = generate(loaded, prompt, [steers], GREEDY)
        assert batched.rows[i].token_ids == single.rows[0].token_ids, f"row {i}"


def test_left_padded_front_counts_from_first_real_token(gpt2):
    """In a batch, row 1's prompt is shorter: its front positions start after its left padding."""
    layer, c = 1, 5.0
    vector = capture_actadd(gpt2, "Love", "Hate weddings", layer)
    long_ids, short_ids = encode(gpt2.tokenizer, PROMPT), encode(gpt2.tokenizer, "Hello there")
    pad = len(long_ids) - len(short_ids)
    ids = torch.tensor([long_ids, [gpt2.tokenizer.pad_token_id] * pad + short_ids])
    mask = (torch.arange(ids.shape[1]) >= torch.tensor([[0], [pad]])).long()
    seen = []
    plan = SteeringPlan([[Steer(vector, c)], [Steer(vector, c)]])
    base = resid_pre(gpt2, ids, [layer], mask)[layer]
    with plan.apply(gpt2.blocks), torch.no_grad():
        plan.bind(mask)
        handle = gpt2.blocks[layer].register_forward_pre_hook(
            lambda m, a, k: seen.append(a[0].clone()), with_kwargs=True
        )
        gpt2.model(input_ids=ids, attention_mask=mask)
        handle.remove()
    n = vector.n_tokens
    delta = seen[0] - base
    torch.testing.assert_close(delta[0, :n], c * vector.layers[layer])
    torch.testing.assert_close(delta[1, pad : pad + n], c * vector.layers[layer])
    assert delta[1, :pad].abs().max() == 0 and delta[1, pad + n :].abs().max() == 0


def test_composition_adds_vectors_and_profiles_scale_layers(gpt2):
    a = capture_actadd(gpt2, "Love", "Hate", [0, 1])
    torch.manual_seed(0)
    b = a.replace(layers={l: torch.randn_like(t) for l, t in a.layers.items()})
    ids = torch.tensor([encode(gpt2.tokenizer, PROMPT)])
    both = SteeringPlan([[Steer(a, 2.0), Steer(b, -1.0)]])
    combined = SteeringPlan([[Steer(2.0 * a - b, 1.0, mode="front")]])
    with torch.no_grad():
        with both.apply(gpt2.blocks):
            x = gpt2.model(ids).logits
        with combined.apply(gpt2.blocks):
            y = gpt2.model(ids).logits
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
        profiled = SteeringPlan([[Steer(a, 2.0, profile={0: 0.0, 1: 1.0})]])
        only_layer1 = SteeringPlan([[Steer(a.replace(layers={1: a.layers[1]}), 2.0)]])
        with profiled.apply(gpt2.blocks):
            p = gpt2.model(ids).logits
        with only_layer1.apply(gpt2.blocks):
            q = gpt2.model(ids).logits
        assert torch.equal(p, q)


def test_at_layer_moves_a_single_layer_vector(gpt2):
    v = capture_actadd(gpt2, "Love", "Hate", 0)
    plan = SteeringPlan([[Steer(v, 1.0, at_layer=2)]])
    assert plan.layers == [2]
    with pytest.raises(InvalidInputError):
        SteeringPlan([[Steer(capture_actadd(gpt2, "Love", "Hate", [0, 1]), 1.0, at_layer=2)]])


def test_hooks_are_removed_even_when_the_forward_fails(gpt2):
    v = capture_actadd(gpt2, "Love", "Hate", 1)
    plan = SteeringPlan([[Steer(v, 1.0)], [Steer(v, 2.0)]])
    with pytest.raises(InvalidInputError, match="rows"), plan.apply(gpt2.blocks):
        gpt2.model(torch.tensor([encode(gpt2.tokenizer, PROMPT)] * 3))
    assert hook_count(gpt2.blocks) == 0


def test_layer_out_of_range_and_bad_coefficients_are_refused(gpt2):
    v = capture_actadd(gpt2, "Love", "Hate", 1)
    with (
        pytest.raises(IncompatibleVectorError, match="out of range"),
        SteeringPlan([[Steer(v, 1.0, at_layer=99)]]).apply(gpt2.blocks),
    ):
        pass
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match="finite"):
            SteeringPlan([[Steer(v, bad)]])
    with pytest.raises(InvalidInputError, match="front mode"):
        SteeringPlan([[Steer(v.to_direction(), 1.0, mode="front")]])
    with pytest.raises(InvalidInputError, match="mode"):
        SteeringPlan([[Steer(v, 1.0, mode="sideways")]])


def test_live_coefficient_change_takes_effect_from_the_next_token(gpt2):
    """Changing a coefficient mid-stream equals a run that used the new value from that step on."""
    direction = capture_actadd(gpt2, "Love", "Hate", 1).to_direction()
    sampling = SamplingConfig(temperature=0, max_new_tokens=10)
    switch_at = 4

    def run(live: bool):
        plan = SteeringPlan([[Steer(direction, 0.0, mode="all")]])

        def on_token(event):
            if live and event.step == switch_at - 1:
                plan.set_coefficient(0, 0, 6.0)

        return generate(gpt2, PROMPT, plan, sampling, on_token=on_token).rows[0].token_ids, plan

    static, _ = run(live=False)
    live, plan = run(live=True)
    assert live[:switch_at] == static[:switch_at]
    assert live != static
    with pytest.raises(InvalidInputError):
        plan.set_coefficient(0, 0, float("nan"))


def test_set_coefficient_is_thread_safe(gpt2):
    v = capture_actadd(gpt2, "Love", "Hate", 1).to_direction()
    plan = SteeringPlan([[Steer(v, 1.0, mode="all")]])

    def spin():
        for i in range(2000):
            plan.set_coefficient(0, 0, float(i % 7))

    threads = [threading.Thread(target=spin) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    plan.set_coefficient(0, 0, 2.5)
    assert plan._terms[1][0].coeff[0].item() == pytest.approx(2.5)
