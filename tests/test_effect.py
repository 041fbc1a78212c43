"""The per-token effect: KL(steered || unsteered) on the steered row's own context, streamed.

Checked against a slow reference that recomputes both distributions from scratch for every prefix with
full forward passes (steered through SteeringPlan hooks, unsteered plain), and on the demo model, where
steering changes the topic early and later tokens that the unsteered model would also write must not
light up.
"""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch

from engine import (
    InvalidInputError,
    SamplingConfig,
    Steer,
    SteeringPlan,
    capture_actadd,
    generate,
    hook_count,
    load_model,
    save_vector,
)
from engine.cli import main
from engine.effect import kl_divergence
from engine.experiments import SweepSpec, run_sweep

PROMPT = "I went up to my friend and said"
SAMPLING = SamplingConfig.paper(top_p=0.9, max_new_tokens=12, seed=3)


def _reference(loaded, steers, prompt_ids, token_ids):
    """For each generated token i: KL(steered || unsteered) and the unsteered top-5 token ids, from two
    cache-free forward passes over prompt + token_ids[:i]."""
    kls, tops = [], []
    plan = SteeringPlan([steers])
    for i in range(len(token_ids)):
        ids = torch.tensor([prompt_ids + token_ids[:i]])
        with torch.inference_mode():
            with plan.apply(loaded.blocks):
                plan.bind(torch.ones(1, len(prompt_ids)))  # where the prompt ends (mode generated)
                steered = loaded.model(input_ids=ids, use_cache=False).logits[0, -1].float()
            unsteered = loaded.model(input_ids=ids, use_cache=False).logits[0, -1].float()
        p, q = torch.log_softmax(steered, -1), torch.log_softmax(unsteered, -1)
        kls.append(float(kl_divergence(p, q)))
        tops.append(q.topk(5).indices.tolist())
    return kls, tops


@pytest.mark.parametrize(("arch", "mode"), [("gpt2", "front"), ("gpt2", "all"), ("llama", "generated")])
def test_effect_agrees_with_a_slow_reference(loaded_models, arch, mode):
    loaded = loaded_models[arch]
    vector = capture_actadd(loaded, "Love", "Hate", 1)
    steers = [Steer(vector, 4.0, mode=mode)]
    events = []
    result = generate(loaded, PROMPT, [[], steers, []], SAMPLING, effect_rows=[1], on_token=events.append)
    row = result.rows[1]
    assert result.rows[0].effect is None and result.rows[2].effect is None
    assert len(row.effect) == len(row.token_ids) == SAMPLING.max_new_tokens
    kls, tops = _reference(loaded, steers, row.prompt_token_ids, row.token_ids)
    assert row.effect == pytest.approx(kls, rel=1e-3, abs=1e-5)
    assert max(kls) > 1e-3  # steering does something measurable here
    steered = [e for e in events if e.row == 1 and e.token_id >= 0]  # token_id -1: end-of-stream text
    assert [e.kl for e in steered] == row.effect  # the value arrives with its token
    for event, top in zip(steered, tops, strict=True):
        # The hover shows the unsteered model's alternatives on this same context.
        assert [loaded.tokenizer.decode([i]) for i in top] == [t for t, _ in event.top]
        assert sum(p for _, p in event.top) <= 1 + 1e-6
    assert all(e.kl is None and e.top == [] for e in events if e.row != 1 or e.token_id < 0)
    assert hook_count(loaded.blocks) == 0


@pytest.mark.parametrize("mode", ["front", "all"])
def test_zero_coefficient_gives_exactly_zero_on_every_token(gpt2, mode):
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    # Other rows of the batch are steered, so the hooks are active on every forward pass.
    rows = [[], [Steer(vector, 0.0, mode=mode)], [Steer(vector, 5.0, mode=mode)]]
    result = generate(gpt2, PROMPT, rows, SAMPLING, effect_rows=[1, 2])
    assert result.rows[1].effect == [0.0] * SAMPLING.max_new_tokens
    assert result.rows[1].token_ids == result.rows[0].token_ids
    assert any(kl > 0 for kl in result.rows[2].effect)


def test_effect_does_not_change_the_text(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    rows = [[], [Steer(vector, 4.0, mode="all")]]
    plain = generate(gpt2, PROMPT, rows, SAMPLING)
    measured = generate(gpt2, PROMPT, rows, SAMPLING, effect_rows=[1, 0])
    assert [r.token_ids for r in plain.rows] == [r.token_ids for r in measured.rows]
    assert measured.rows[0].effect == [0.0] * len(measured.rows[0].token_ids)  # an unsteered row
    for bad in (2, -1):
        with pytest.raises(InvalidInputError, match=f"effect row {bad} is not a row"):
            generate(gpt2, PROMPT, rows, SAMPLING, effect_rows=[bad])


@pytest.fixture(scope="module")
def demo():
    return load_model("demo")


def test_a_token_the_unsteered_model_would_also_pick_stays_dim_after_divergence(demo):
    weddings = capture_actadd(demo, " weddings", " ", 0)
    events = []
    result = generate(
        demo,
        "Yesterday we went to the market",
        [[], [Steer(weddings, 2.0)]],
        SamplingConfig.paper(max_new_tokens=40),
        effect_rows=[1],
        on_token=events.append,
    )
    unsteered, steered = result.rows
    diverged = next(
        i for i, (a, b) in enumerate(zip(unsteered.token_ids, steered.token_ids, strict=False)) if a != b
    )
    assert diverged < 8  # the topic changes early: the texts differ from here on
    n = min(len(unsteered.token_ids), len(steered.token_ids))
    late = [e for e in events if e.row == 1 and diverged + 8 <= e.step < n and e.token_id >= 0]
    # Tokens the unsteered model, reading the same text, would also have picked (top-1 with p > 0.99).
    agreed = [e for e in late if e.top[0] and e.top[0][0] == demo.tokenizer.decode([e.token_id])]
    agreed = [e for e in agreed if e.top[0][1] > 0.99]
    assert len(agreed) >= 5
    small = [e for e in agreed if e.kl < 0.01]
    assert len(small) >= 0.8 * len(agreed)

    # The old measure compared with the unsteered pane at the same step, i.e. another context, and lit
    # up every one of these tokens.
    def last_logprobs(ids, plan=None):
        with torch.inference_mode(), plan.apply(demo.blocks) if plan else contextlib.nullcontext():
            logits = demo.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        return torch.log_softmax(logits, -1)

    plan = SteeringPlan([[Steer(weddings, 2.0)]])
    for e in small:
        old = kl_divergence(
            last_logprobs(steered.prompt_token_ids + steered.token_ids[: e.step], plan),
            last_logprobs(unsteered.prompt_token_ids + unsteered.token_ids[: e.step]),
        )
        assert float(old) > 1.0
    assert max(e.kl for e in events if e.row == 1 and e.kl is not None) > 0.5  # the topic change is bright


def test_cli_json_effect(gpt2, model_dirs, tmp_path, capsys):
    path = tmp_path / "love.safetensors"
    save_vector(capture_actadd(gpt2, "Love", "Hate", 1, name="love"), path)
    common = ["generate", "--model", str(model_dirs["gpt2"]), "--prompt", PROMPT, "--max-new-tokens", "10"]
    for coeff in (0, 4):
        code = main(
            [*common, "--steer", f"{path}:{coeff}", "--mode", "all", "--json", "--effect", "--compare"]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        payload = json.loads(out)
        assert len(payload["effect"]) == len(payload["token_ids"]) == 10
        assert all(isinstance(v, float) and v >= 0 for v in payload["effect"])
        if coeff == 0:
            assert payload["effect"] == [0.0] * 10
        else:
            api = generate(
                gpt2, PROMPT, [[Steer(load_vector_at(path), 4.0, mode="all")]],
                SamplingConfig(max_new_tokens=10), effect_rows=[0],
            )  # fmt: skip
            assert payload["effect"] == pytest.approx(api.rows[0].effect, rel=1e-4, abs=1e-6)
    code = main([*common, "--effect"])
    _, err = capsys.readouterr()
    assert code == 2 and err.strip().count("\n") == 0 and "--json" in err


def load_vector_at(path):
    from engine import load_vector

    return load_vector(path)


def test_sweep_reports_the_mean_effect_of_each_cell(gpt2, tmp_path):
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    spec = SweepSpec(
        vector=vector,
        coeffs=[0.0, 4.0],
        prompts=[PROMPT],
        targets=["love"],
        samples_per_prompt=2,
        sampling=SamplingConfig.paper(max_new_tokens=8),
    )
    result = run_sweep(gpt2, spec)
    zero, four = result.cells
    assert zero.effect == 0.0 and four.effect > 0 and math.isfinite(four.effect)
    # The cell's number is the mean over its tokens of the same per-token measure as generate's.
    rows = generate(
        gpt2, [PROMPT] * 2, [[Steer(vector, 4.0)]] * 2, spec.sampling, row_seeds=[0, 1], effect_rows=[0, 1]
    ).rows
    tokens = [kl for r in rows for kl in r.effect]
    assert four.effect == pytest.approx(sum(tokens) / len(tokens), rel=1e-5)
    result.to_csv(tmp_path / "sweep.csv")
    header, first, second = (tmp_path / "sweep.csv").read_text(encoding="utf-8").splitlines()[:3]
    assert "effect_kl" in header.split(",")
    column = header.split(",").index("effect_kl")
    assert float(first.split(",")[column]) == 0.0 and float(second.split(",")[column]) > 0


def test_a_plan_with_unsteered_rows_checks_the_batch_and_leaves_those_rows_alone(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    plan = SteeringPlan([[Steer(vector, 3.0, mode="all")]])
    ids = torch.tensor([gpt2.tokenizer.encode(PROMPT)] * 2)
    with torch.inference_mode():
        plain = gpt2.model(input_ids=ids[:1]).logits
        with plan.apply(gpt2.blocks, unsteered_rows=1):
            both = gpt2.model(input_ids=ids).logits  # row 0 steered, row 1 (the extra row) not
            with pytest.raises(InvalidInputError, match="1 rows and 1 unsteered rows but the batch has 3"):
                gpt2.model(input_ids=torch.cat([ids, ids[:1]]))
    assert torch.allclose(both[1], plain[0], atol=1e-5) and not torch.allclose(both[0], plain[0], atol=1e-3)
    assert hook_count(gpt2.blocks) == 0


def test_the_effect_costs_one_extra_row_per_measured_row(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    widths = []
    handle = gpt2.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        rows = [[], [Steer(vector, 2.0)], [Steer(vector, 4.0)]]
        generate(gpt2, PROMPT, rows, SAMPLING)
        plain = set(widths)
        widths.clear()
        generate(gpt2, PROMPT, rows, SAMPLING, effect_rows=[1])
        one = set(widths)
        widths.clear()
        generate(gpt2, PROMPT, rows, SAMPLING, effect_rows=[1, 2])
    finally:
        handle.remove()
    assert (plain, one, set(widths)) == ({3}, {4}, {5})
