"""Target 5: our steered tokens per second against repeng and steering-vectors, same model, prompt and length.

    bash bench/setup_peers.sh                      # once: bench/.venv-peers with the peer libraries
    python -m bench.bench_peers                    # re-runs itself in bench/.venv-peers when needed

The equivalent vector is a direction added at every position (prompt and generated) at one layer:
- ours: `engine.generate` with `Steer(vector, c, mode="all")` at layer l+1 (the input of block l+1);
- repeng: `ControlModel(model, [l])` + `set_control`, which adds to block l's OUTPUT;
- steering-vectors: `SteeringVector({l: v}, "decoder_block").apply(model, multiplier=c)`, a forward hook
  on block l that adds to its OUTPUT. Its `apply(..., token_indices=...)` needs `min_token_index=None`;
  all-position addition is its default `min_token_index=0`.
Block l's output is block l+1's input, so all three add the same vector at the same place: greedy tokens
must be identical before any timing is reported. The peers run `model.generate` directly (tokenize,
generate, decode), which is how their READMEs use them; ours runs the app's full path (streaming decode,
cancellation check, per-row plans).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

VENV_PYTHON = common.ROOT / "bench" / ".venv-peers" / "bin" / "python"
PROMPT = "I think that the weather in the city is going to be"


def peers_available() -> str | None:
    """None when both peer libraries import, else why not."""
    try:
        import repeng  # noqa: F401
        import steering_vectors  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class PeerVariants:
    """The generations compared, each a call that returns its new token ids, and what was checked."""

    calls: dict[str, Callable[[], list[int]]]  # ours, repeng, steering-vectors, hf unsteered, ours unsteered
    tokens: dict[str, list[int]]  # the greedy tokens of each call
    details: dict  # layer, block, coefficient, the tokens, identical_greedy_tokens

    @property
    def same(self) -> bool:
        return bool(self.details["identical_greedy_tokens"])


def peer_variants(loaded, n_new: int, n_pairs: int = 16) -> PeerVariants:
    """Ours, repeng and steering-vectors adding the same direction at the same place on `loaded`, plus plain
    `model.generate` and ours unsteered; the steered tokens are checked to be identical."""
    import numpy as np
    import torch
    from repeng import ControlModel, ControlVector
    from steering_vectors import SteeringVector as SVSteeringVector

    from bench.bench_steering import make_pairs
    from engine import SamplingConfig, Steer, capture_mean_diff, generate, hook_count
    from engine.generation import prompt_ids

    model, tokenizer = loaded.model, loaded.tokenizer
    block = loaded.info.n_layers // 2 - 1  # the peers' block l; ours is layer l + 1, the next block's input
    direction = capture_mean_diff(loaded, make_pairs(n_pairs), layers=block + 1)
    vec = direction.layers[block + 1]  # [hidden]
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=n_new)
    # The peers tokenize the prompt on every call, as their READMEs do (ours does inside `generate`), into
    # the same ids: the text itself, or with the BOS spelled out where the BOS rule prepends one (GPT-2).
    ours_ids = prompt_ids(loaded, PROMPT)
    peer_text = next(
        (t for t in (PROMPT, f"{tokenizer.bos_token}{PROMPT}") if tokenizer(t)["input_ids"] == ours_ids), None
    )
    assert peer_text is not None, "no plain text tokenizes to the engine's prompt ids"

    def hf_generate() -> list[int]:
        encoded = tokenizer(peer_text, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                max_new_tokens=n_new,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = out[0, len(ours_ids) :].tolist()
        tokenizer.decode(new, skip_special_tokens=True)  # a user of the peers decodes the text too
        return new

    def ours(coeff: float) -> list[int]:
        return generate(loaded, PROMPT, [[Steer(direction, coeff, mode="all")]], sampling).rows[0].token_ids

    repeng_vector = ControlVector(
        model_type=model.config.model_type, directions={block: vec.numpy().astype(np.float32)}
    )

    def with_repeng(coeff: float) -> list[int]:
        wrapped = ControlModel(model, [block])  # swaps block l for a wrapper (repeng mutates the model)
        try:
            wrapped.set_control(repeng_vector, coeff)
            return hf_generate()
        finally:
            wrapped.reset()
            wrapped.unwrap()

    sv_vector = SVSteeringVector(layer_activations={block: vec.clone()}, layer_type="decoder_block")

    def with_steering_vectors(coeff: float) -> list[int]:
        with sv_vector.apply(model, multiplier=coeff, min_token_index=0):  # every position
            return hf_generate()

    # A coefficient that visibly steers this model, so "same tokens" means something.
    unsteered = ours(0.0)
    coeff = 4.0
    while ours(coeff) == unsteered and coeff < 1024:
        coeff *= 2
    calls: dict[str, Callable[[], list[int]]] = {
        "ours": lambda: ours(coeff),
        "repeng": lambda: with_repeng(coeff),
        "steering-vectors": lambda: with_steering_vectors(coeff),
        "hf unsteered": hf_generate,
        "ours unsteered": lambda: ours(0.0),
    }
    tokens = {name: call() for name, call in calls.items()}
    steered = ("ours", "repeng", "steering-vectors")
    details = {
        "layer_ours": block + 1,
        "block_peers": block,
        "coefficient": coeff,
        "vector_norm": float(vec.norm()),
        "steering_changes_tokens": tokens["ours"] != unsteered,
        "identical_greedy_tokens": all(tokens[name] == tokens["ours"] for name in steered),
        "tokens": {name: tokens[name][:16] for name in steered},
    }
    assert hook_count(loaded.blocks) == 0 and not any(
        type(b).__name__ == "ControlModule" for b in loaded.blocks
    )
    return PeerVariants(calls, tokens, details)


def load_peer_model(args: argparse.Namespace):
    """The model compared: --model (a real one, opened as the app opens it), else a random GPT-2."""
    if args.model:
        from engine import load_model

        return load_model(args.model, device="cpu")
    return common.load("tiny-gpt2" if args.tiny else "gpt2-small")


def run(args: argparse.Namespace) -> dict:
    import importlib.metadata as md

    import torch

    torch.set_num_threads(args.threads)
    result = common.Result("peers", params=vars(args).copy())
    result.details["peer_versions"] = {name: md.version(name) for name in ("repeng", "steering-vectors")}
    n_new = args.new_tokens or (4 if args.tiny else 12)
    reps = args.reps or (1 if args.tiny else 25)
    loaded = load_peer_model(args)
    if args.model:
        result.details["model"] = args.model
    peers = peer_variants(loaded, n_new)
    result.details.update(peers.details)
    result.target(
        "5", "ours vs peers: identical greedy tokens (1 = yes)", float(peers.same), ">=", 1.0, unit=""
    )
    if not peers.same:
        result.details["error"] = "the steered tokens differ between ours and a peer; speeds not compared"
        return result.write(args.out)

    times = common.interleaved(peers.calls, reps, label="" if args.tiny else "peers")
    n = {name: len(peers.tokens[name]) for name in peers.calls}
    result.details["times"] = times.summary()
    result.details["tokens_per_second_median_wall"] = {
        name: n[name] / times.median(name, "wall") for name in peers.calls
    }
    result.details["tokens_per_cpu_second_median"] = {
        name: n[name] / times.median(name, "cpu") for name in peers.calls
    }
    for peer in ("repeng", "steering-vectors"):
        ratio = times.ratio(peer, "ours", args.clock) * n["ours"] / n[peer]  # ours tok/s / theirs
        result.details[f"ours_over_{peer}"] = ratio
        result.details[f"ours_over_{peer}_wall"] = times.ratio(peer, "ours", "wall") * n["ours"] / n[peer]
        result.details[f"ours_over_{peer}_ci95"] = [
            x * n["ours"] / n[peer] for x in times.ratio_ci(peer, "ours", args.clock)
        ]
        result.target("5", f"steered tok/s, ours / {peer}", ratio, ">=", 1.0)
    return result.write(args.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--tiny", action="store_true", help="tiny model and 1 repetition: checks the code path only"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see bench/README.md)")
    p.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="clock of the checked ratios (default cpu)"
    )
    p.add_argument("--model", default="", help="a model file or folder instead of the random gpt2-small")
    p.add_argument("--new-tokens", type=int, default=0, help="tokens per generation (default 12)")
    p.add_argument("--reps", type=int, default=0, help="interleaved repetitions (default 25)")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/peers.json)")
    return p


def main(argv: list[str] | None = None) -> dict:
    import json

    args = parser().parse_args(argv)
    out = args.out or common.RESULTS_DIR / "peers.json"
    if (why := peers_available()) is not None:
        here = Path(sys.executable).absolute()
        if (
            VENV_PYTHON.exists()
            and here != VENV_PYTHON.absolute()
            and not os.environ.get("ACTADD_BENCH_NO_REEXEC")
        ):
            argv = list(sys.argv[1:] if argv is None else argv)
            if args.out is None:
                argv += ["--out", str(out)]
            env = {**os.environ, "ACTADD_BENCH_NO_REEXEC": "1"}
            subprocess.run(
                [str(VENV_PYTHON), "-m", "bench.bench_peers", *argv], cwd=common.ROOT, env=env, check=False
            )
            data = json.loads(out.read_text(encoding="utf-8"))
            return data
        result = common.Result("peers", params=vars(args).copy())
        result.details["error"] = f"peer libraries not importable ({why}); run bench/setup_peers.sh"
        data = result.write(out)
        print(f"peers: skipped: {data['details']['error']}")
        return data
    data = run(args)
    print(f"peers: load average {data['load_average_start']} -> {data['load_average_end']}")
    if "error" in data["details"]:
        print(f"peers: {data['details']['error']}")
    common.print_targets(data)
    return data


if __name__ == "__main__":
    main()
