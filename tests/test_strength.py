"""Normalised strengths: typical residual norms (measured, cached), `Steer.from_strength`, the CLI's `0.5n`."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from pathlib import Path

import pytest
import torch

from engine import (
    IncompatibleVectorError,
    InvalidInputError,
    PromptPair,
    SamplingConfig,
    Steer,
    SteeringPlan,
    capture_actadd,
    capture_mean_diff,
    generate,
    hook_count,
)
from engine.cli import main
from engine.residual_norms import (
    cache_file,
    cached_norms,
    measure_residual_norms,
    neutral_ids,
    residual_norm_profile,
    residual_norms,
)
from engine.strength import added_norm_ratio, per_position_norm, relative_norms, strength_per_coefficient

PROMPT = "I went up to my friend and said"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own cache folder, never the user's."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ACTADD_CACHE", str(folder))
    return folder


def _hand_norms(loaded) -> list[float]:
    """The same statistic computed independently: our own pre-hooks record each block's input during a
    plain full forward pass; median (statistics.median) of per-token norms, position 0 and BOS left out."""
    ids = neutral_ids(loaded)
    seen: dict[int, torch.Tensor] = {}
    handles = [
        block.register_forward_pre_hook(
            lambda m, args, kwargs, l=l: seen.__setitem__(
                l, (args[0] if args else kwargs["hidden_states"]).detach().float()
            ),
            with_kwargs=True,
        )
        for l, block in enumerate(loaded.blocks)
    ]
    try:
        with torch.no_grad():
            loaded.model(
                input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
            )
    finally:
        for handle in handles:
            handle.remove()
    bos = loaded.tokenizer.bos_token_id
    keep = [i for i, t in enumerate(ids) if i > 0 and t != bos]
    return [statistics.median(seen[l][0, i].norm().item() for i in keep) for l in range(len(loaded.blocks))]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_measurement_matches_a_hand_computation(loaded_models, arch):
    loaded = loaded_models[arch]
    norms, n_tokens = measure_residual_norms(loaded)
    hand = _hand_norms(loaded)
    assert len(norms) == len(loaded.blocks) == len(hand)
    assert norms == pytest.approx(hand, rel=1e-5)
    ids = neutral_ids(loaded)
    assert n_tokens == len(ids) - 1  # everything but the BOS at position 0
    assert len(ids) <= 128  # cut to the tiny models' context


def test_position_zero_is_left_out(gpt2, monkeypatch):
    """A huge norm at position 0 (real models' attention sink) does not move the typical norm."""
    base, _ = measure_residual_norms(gpt2)

    def inflate(module, args, kwargs):
        h = (args[0] if args else kwargs["hidden_states"]).clone()
        h[:, 0] *= 1000.0
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    handle = gpt2.blocks[1].register_forward_pre_hook(inflate, with_kwargs=True)
    try:
        inflated, _ = measure_residual_norms(gpt2)
    finally:
        handle.remove()
    assert inflated[1] == pytest.approx(base[1], rel=1e-6)


def test_cache_hit_miss_and_invalidation(loaded_models, private_cache, monkeypatch):
    gpt2, llama = loaded_models["gpt2"], loaded_models["llama"]
    first = residual_norms(gpt2)
    path = cache_file(gpt2.fingerprint)
    assert not first.cached and Path(first.cache_file) == path and path.is_file()
    assert path.parent == private_cache / "residual-norms" and path.stem == gpt2.fingerprint.id
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]  # atomic: no leftovers

    import engine.residual_norms as rn

    calls = []
    real = rn.measure_residual_norms
    monkeypatch.setattr(rn, "measure_residual_norms", lambda loaded: calls.append(loaded) or real(loaded))
    hit = residual_norms(gpt2)
    assert hit.cached and hit.norms == first.norms and calls == []
    assert residual_norm_profile(gpt2) == first.norms and calls == []

    other = residual_norms(llama)  # another fingerprint: its own file, measured
    assert not other.cached and calls == [llama]
    assert cache_file(llama.fingerprint) != path and len(other.norms) == len(llama.blocks)
    assert residual_norms(gpt2).cached  # the first model's entry is untouched

    # Same fingerprint, other weights setting (here: the quantization recorded in ModelInfo): a miss, and
    # both measurements are kept in the fingerprint's file.
    requantized = dataclasses.replace(gpt2, info=dataclasses.replace(gpt2.info, quantize="8bit"))
    assert not residual_norms(requantized).cached and calls[-1] is requantized
    assert residual_norms(gpt2).cached and residual_norms(requantized).cached
    assert len(json.loads(path.read_text())["measurements"]) == 2

    assert not residual_norms(gpt2, refresh=True).cached
    assert cached_norms(gpt2.fingerprint) == pytest.approx(first.norms)


def test_weights_changed_on_disk_is_a_miss(model_dirs, tmp_path):
    import shutil

    from engine import load_model

    folder = shutil.copytree(model_dirs["gpt2"], tmp_path / "copy")
    loaded = load_model(folder, device="cpu")
    assert not residual_norms(loaded).cached and residual_norms(loaded).cached
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert not residual_norms(loaded).cached


@pytest.mark.parametrize("garbage", [b"{not json", b"[1, 2]", b'{"format": 1, "measurements": {"x": 5}}'])
def test_corrupt_cache_is_measured_again_and_rewritten(gpt2, garbage):
    path = cache_file(gpt2.fingerprint)
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    result = residual_norms(gpt2)
    assert not result.cached and len(result.norms) == len(gpt2.blocks)
    assert json.loads(path.read_text())["format"] == 1
    assert residual_norms(gpt2).cached


def test_wrong_length_cache_entry_is_not_trusted(gpt2):
    residual_norms(gpt2)
    path = cache_file(gpt2.fingerprint)
    data = json.loads(path.read_text())
    for record in data["measurements"].values():
        record["norms"] = record["norms"][:-1]
    path.write_text(json.dumps(data))
    assert not residual_norms(gpt2).cached


def test_unwritable_cache_folder_still_measures(gpt2, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # a cache "folder" below a file can't be created, even by root
    monkeypatch.setenv("ACTADD_CACHE", str(blocker / "cache"))
    result = residual_norms(gpt2)
    assert not result.cached and result.cache_file == "" and len(result.norms) == len(gpt2.blocks)
    assert not residual_norms(gpt2).cached  # nothing was kept, nothing breaks


# ---- strengths ----------------------------------------------------------------------------------------
def _by_hand(tensor: torch.Tensor) -> float:
    """RMS over the non-zero positions of a [n, hidden] vector, or the norm of a [hidden] one."""
    if tensor.dim() == 1:
        return tensor.norm().item()
    rows = [r for r in tensor if r.any()]
    return (sum(r.norm().item() ** 2 for r in rows) / len(rows)) ** 0.5


def test_per_position_norm_skips_the_zero_bos_position():
    v = torch.zeros(3, 4)
    v[1] = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5
    v[2] = torch.tensor([0.0, 0.0, 12.0, 5.0])  # norm 13
    assert per_position_norm(v) == pytest.approx(((25 + 169) / 2) ** 0.5)
    assert per_position_norm(torch.tensor([6.0, 8.0])) == pytest.approx(10.0)
    assert per_position_norm(torch.zeros(2, 4)) == 0.0


@pytest.mark.parametrize("strength", [0.5, 2.0, -0.25])
def test_resolved_coefficient_gives_the_claimed_norm_ratio(gpt2, strength):
    norms = residual_norm_profile(gpt2)
    vector = capture_actadd(gpt2, "Love", "Hate", [1, 2])
    steer = Steer.from_strength(vector, strength, gpt2)
    assert steer.strength == strength and set(steer.profile) == {1, 2} and steer.profile[1] == 1.0
    for layer in (1, 2):
        c = steer.coeff * steer.profile[layer]
        assert abs(c) * _by_hand(vector.layers[layer]) / norms[layer] == pytest.approx(abs(strength))
    assert added_norm_ratio(steer, norms) == pytest.approx({1: abs(strength), 2: abs(strength)})
    assert (steer.coeff > 0) == (strength > 0)
    # reading a raw coefficient back as a strength (a slider's scale) inverts the resolution
    assert strength_per_coefficient(Steer(vector), norms) * steer.coeff == pytest.approx(strength)


def test_the_hook_adds_exactly_that_norm(gpt2):
    """Through the real hook: the change in block 1's input at the vector's positions has an RMS norm of
    strength × the typical norm."""
    norms = residual_norm_profile(gpt2)
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    n = vector.layers[1].shape[0]
    steer = Steer.from_strength(vector, 0.5, gpt2)
    ids = torch.tensor([neutral_ids(gpt2)[:20]])

    def block_input(plan: SteeringPlan) -> torch.Tensor:
        seen = {}
        with plan.apply(gpt2.blocks), torch.no_grad():
            # registered after the steering hook, so it sees the steered input
            handle = gpt2.blocks[1].register_forward_pre_hook(
                lambda m, args, kwargs: seen.__setitem__(
                    "h", (args[0] if args else kwargs["hidden_states"]).clone()
                ),
                with_kwargs=True,
            )
            try:
                gpt2.model(input_ids=ids)
            finally:
                handle.remove()
        return seen["h"][0]

    added = block_input(SteeringPlan([[steer]])) - block_input(SteeringPlan([[]]))  # [seq, hidden]
    assert _by_hand(added[:n]) / norms[1] == pytest.approx(0.5, rel=1e-4)
    assert not added[n:].any()  # front mode: only the vector's positions
    assert hook_count(gpt2.blocks) == 0


def test_direction_modes_and_at_layer_use_the_applied_tensor(gpt2):
    norms = residual_norm_profile(gpt2)
    actadd = capture_actadd(gpt2, "Love", "Hate", 1)
    steer = Steer.from_strength(actadd, 1.0, norms, mode="all")  # averaged over positions first
    direction = actadd.to_direction().layers[1]
    assert steer.coeff * direction.norm().item() / norms[1] == pytest.approx(1.0)
    moved = Steer.from_strength(actadd, 1.0, norms, at_layer=2)
    assert moved.at_layer == 2 and moved.coeff * _by_hand(actadd.layers[1]) / norms[2] == pytest.approx(1.0)
    pairs = [PromptPair("I love it", "I hate it"), PromptPair("Lovely day", "Awful day")]
    mean = capture_mean_diff(gpt2, pairs, 2)
    steer = Steer.from_strength(mean, 0.3, norms)
    assert steer.resolved_mode == "all" and steer.profile is None
    assert steer.coeff * mean.layers[2].norm().item() / norms[2] == pytest.approx(0.3)
    assert relative_norms(mean, norms) == pytest.approx({2: mean.layers[2].norm().item() / norms[2]})


def test_user_profile_multiplies_on_top(gpt2):
    norms = residual_norm_profile(gpt2)
    vector = capture_actadd(gpt2, "Love", "Hate", [1, 2])
    steer = Steer.from_strength(vector, 1.0, norms, profile={2: 0.5})
    assert added_norm_ratio(steer, norms) == pytest.approx({1: 1.0, 2: 0.5})


def test_strength_errors(gpt2):
    norms = residual_norm_profile(gpt2)
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    with pytest.raises(InvalidInputError, match="ablate takes a raw coefficient"):
        Steer.from_strength(vector, 0.5, norms, mode="ablate")
    with pytest.raises(InvalidInputError, match="not a finite number"):
        Steer.from_strength(vector, float("nan"), norms)
    zero = vector.replace(layers={1: torch.zeros_like(vector.layers[1])}, name="zero")
    with pytest.raises(InvalidInputError, match="vector 'zero' is zero at layer 1"):
        Steer.from_strength(zero, 0.5, norms)
    with pytest.raises(IncompatibleVectorError, match="layer 7 is out of range"):
        Steer.from_strength(vector, 0.5, norms, at_layer=7)


def test_strength_zero_is_bit_identical_to_unsteered(gpt2):
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    steer = Steer.from_strength(vector, 0.0, gpt2)
    assert steer.coeff == 0.0
    result = generate(gpt2, PROMPT, [[], [steer]], SamplingConfig(temperature=0, max_new_tokens=5))
    assert result.rows[0].token_ids == result.rows[1].token_ids


# ---- the CLI ------------------------------------------------------------------------------------------
def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli_library(model_dirs, tmp_path, capsys):
    model, lib = str(model_dirs["gpt2"]), str(tmp_path / "lib")
    for name, layers in (("love-hate", ["1"]), ("two-layers", ["1", "2"])):
        argv = ["capture", "--model", model, "--positive", "Love", "--negative", "Hate", "--name", name]
        for layer in layers:
            argv += ["--layer", layer]
        code, _, err = run(capsys, *argv, "--library", lib)
        assert code == 0, err
    return model, lib


def test_cli_generate_with_a_normalised_strength(cli_library, gpt2, capsys):
    model, lib = cli_library
    code, out, err = run(
        capsys, "generate", "--model", model, "--prompt", PROMPT, "--steer", "love-hate:0.5n",
        "--max-new-tokens", "4", "--temperature", "0", "--library", lib, "--json",
    )  # fmt: skip
    assert code == 0, err
    steering = json.loads(out)["steering"][0]
    from engine.library import Library

    vector = Library(lib).load("love-hate")
    norms = residual_norm_profile(gpt2)
    assert steering["strength"] == 0.5
    assert steering["coeff"] * _by_hand(vector.layers[1]) / norms[1] == pytest.approx(0.5)

    code, out, err = run(
        capsys, "generate", "--model", model, "--prompt", PROMPT, "--steer", "love-hate:1n@2",
        "--steer", "two-layers:-0.25n", "--max-new-tokens", "2", "--library", lib, "--json",
    )  # fmt: skip
    assert code == 0, err
    first, second = json.loads(out)["steering"]
    assert first["layers"] == [2] and first["coeff"] * _by_hand(vector.layers[1]) / norms[2] == pytest.approx(
        1
    )
    assert second["strength"] == -0.25 and set(second["profile"]) == {"1", "2"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("love-hate:xn", "neither a coefficient (e.g. 4) nor a normalised strength (e.g. 0.5n)"),
        ("love-hate:n", "'n' is neither a coefficient"),
        ("love-hate:infn", "strength 'infn' is not a finite number"),
        ("love-hate:nan", "coefficient 'nan' is not a finite number"),
        (
            "love-hate:0.5N",
            "'0.5N' is not a number; expected a coefficient (e.g. 4) or a normalised strength",
        ),
    ],
)
def test_cli_strength_syntax_errors_are_one_line_exit_2(cli_library, capsys, spec, message):
    model, lib = cli_library
    code, out, err = run(
        capsys, "generate", "--model", model, "--prompt", PROMPT, "--steer", spec, "--library", lib
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_cli_strength_refused_in_ablate_mode(cli_library, capsys):
    model, lib = cli_library
    code, _, err = run(
        capsys, "generate", "--model", model, "--prompt", PROMPT, "--steer", "love-hate:0.5n",
        "--mode", "ablate", "--library", lib,
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "mode ablate takes a raw coefficient" in err


def test_cli_norms_command(model_dirs, gpt2, capsys):
    code, out, err = run(capsys, "norms", "--model", str(model_dirs["gpt2"]), "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["norms"] == pytest.approx(residual_norm_profile(gpt2)) and not payload["cached"]
    assert payload["fingerprint_id"] == gpt2.fingerprint.id
    code, out, _ = run(capsys, "norms", "--model", str(model_dirs["gpt2"]))
    assert code == 0 and "(median over" in out and "cached" in out
    assert len([line for line in out.splitlines() if line.strip().startswith("layer")]) == len(gpt2.blocks)


def test_cli_library_relative_norms(cli_library, gpt2, capsys):
    model, lib = cli_library
    code, out, err = run(capsys, "library", "show", "love-hate", "--library", lib, "--json")
    assert code == 0, err
    assert "relative_norms" not in json.loads(out)  # nothing measured yet, no model named
    code, out, err = run(
        capsys, "library", "show", "love-hate", "--library", lib, "--relative-to", model, "--json"
    )
    assert code == 0, err
    from engine.library import Library

    vector = Library(lib).load("love-hate")
    expected = _by_hand(vector.layers[1]) / residual_norm_profile(gpt2)[1]
    assert json.loads(out)["relative_norms"] == pytest.approx({"1": expected})
    # measured once, the vector's own model's norms come from the cache without naming a model
    code, out, _ = run(capsys, "library", "show", "love-hate", "--library", lib)
    assert code == 0 and f"1: {expected:.3g}" in out and "typical residual norm" in out

    code, out, err = run(capsys, "library", "list", "--library", lib, "--relative-to", model, "--json")
    assert code == 0, err
    reports = {v["key"]: v["relative_norms"] for v in json.loads(out)["vectors"]}
    assert reports["love-hate"] == pytest.approx({"1": expected}) and set(reports["two-layers"]) == {"1", "2"}
    code, out, _ = run(capsys, "library", "list", "--library", lib, "--relative-to", "demo")
    assert code == 0 and "hidden size 64, the model has 256" in out
