"""Rough edges a new user hit on real models (issue 16): half-filled pairs, file modes and the umask, the
4-bit parameter count, a stray U+FFFD while streaming, the exported script's threads, slow Stop, and
memory sizes formatted two ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from engine import (
    InvalidInputError,
    PromptPair,
    SamplingConfig,
    Steer,
    cancellation,
    capture_actadd,
    capture_mean_diff,
    generate,
    hook_count,
    load_model,
    save_vector,
)
from engine.cli import main
from engine.generation import RowStreamer
from engine.model_stats import format_megabytes, parameter_count
from engine.pairs import parse_csv, parse_jsonl

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "I went up to my friend and said"


# ---- a half-filled pair is refused, naming its row ------------------------------------------------------
def test_half_filled_pair_in_a_file_names_the_line():
    text = '{"positive": "Love", "negative": "Hate"}\n{"positive": "Calm", "negative": ""}\n'
    with pytest.raises(InvalidInputError, match=r"^pairs.jsonl line 2: the negative \(p-\) prompt is empty"):
        parse_jsonl(text, "pairs.jsonl")
    with pytest.raises(InvalidInputError, match=r"^pairs.csv line 3: the positive \(p\+\) prompt is empty"):
        parse_csv("positive,negative\nLove,Hate\n,Sad\n", "pairs.csv")
    with pytest.raises(InvalidInputError, match="line 1: both prompts are empty"):
        parse_jsonl('{"positive": "", "negative": ""}')
    assert parse_jsonl('{"positive": " weddings", "negative": " "}') == [PromptPair(" weddings", " ")]


def test_half_filled_pair_refused_by_capture(gpt2):
    """The app's pair table hands rows straight to the engine: a row with one side empty is refused."""
    pairs = [PromptPair("Love", "Hate"), PromptPair("Calm", ""), PromptPair("Joy", "Sad")]
    with pytest.raises(InvalidInputError, match=r"^pair 2 of 3: the negative \(p-\) prompt is empty"):
        capture_mean_diff(gpt2, pairs, 1)


def test_half_filled_pair_cli_is_one_line_exit_2(model_dirs, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"positive": "Love", "negative": "Hate"}\n{"positive": "", "negative": "Sad"}\n')
    code = main(
        ["capture", "--model", str(model_dirs["gpt2"]), "--method", "mean-diff", "--pairs", str(pairs),
         "--layer", "1", "--name", "x", "--library", str(tmp_path / "lib")]
    )  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert "pairs.jsonl line 2: the positive (p+) prompt is empty" in err


# ---- saved files respect the umask ----------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_vector_files_and_exports_respect_the_umask(gpt2, tmp_path, umask):
    from engine.interop import export
    from engine.library import Library

    vector = capture_actadd(gpt2, "Love", "Hate", 2, name="love")  # layer 2: GGUF's direction.1
    old = os.umask(umask)
    try:
        save_vector(vector, tmp_path / "plain.safetensors")
        library = Library(tmp_path / "lib")
        saved = library.save(vector, "love")
        bundle, gguf = tmp_path / "out.zip", tmp_path / "out.gguf"
        export(library, ["love"], bundle)
        export(library, "love", gguf, direction="mean")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for path in (tmp_path / "plain.safetensors", saved, bundle, gguf):
        assert path.stat().st_mode & 0o777 == expected, path.name
    assert not [p for p in tmp_path.rglob(".tmp-*")]


# ---- the parameter count of a quantized model -----------------------------------------------------------
@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_quantized_parameter_count_is_the_logical_one(model_dirs, llama, quantize):
    quantized = load_model(model_dirs["llama"], quantize=quantize, device="cpu")
    stored = sum(p.numel() for p in quantized.model.parameters())
    assert quantized.info.n_params == llama.info.n_params == parameter_count(llama.model)
    assert llama.info.n_params == sum(p.numel() for p in llama.model.parameters())
    if quantize == "4bit":
        assert stored < quantized.info.n_params  # packed two per byte: numel alone undercounts


# ---- no stray U+FFFD while a multi-byte character streams -----------------------------------------------
def _byte_fallback_tokenizer() -> PreTrainedTokenizerFast:
    """Llama/Gemma style: bytes as <0xXX> tokens, decoded to one U+FFFD per byte until complete."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for word in ("a", "b", " "):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _byte_level_tokenizer() -> PreTrainedTokenizerFast:
    from tiny_models import train_tokenizer

    return train_tokenizer(adds_bos=False)  # GPT-2 style byte-level BPE: "é" and emoji split into bytes


@pytest.mark.parametrize("make", [_byte_fallback_tokenizer, _byte_level_tokenizer])
@pytest.mark.parametrize("text", ["a😀b", "café b", "a€😀é"])
def test_streamer_never_emits_a_replacement_character(make, text):
    tokenizer = make()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in pieces), "the test needs tokens that split a character"
    deltas: list[str] = []
    streamer = RowStreamer(tokenizer, 1, (), lambda event: deltas.append(event.text))
    streamer.put(torch.tensor([[0]]))  # the prompt
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert not any("\ufffd" in d for d in deltas), deltas
    assert "".join(deltas) == text


# ---- the exported script sets torch's threads as the app does -------------------------------------------
def _transcript():
    from engine.transcript import Transcript

    return Transcript(
        prompt="I think that",
        chat=False,
        model={"source": "demo", "device": "cpu", "quantize": "none", "dtype": "auto"},
        sampling=asdict(SamplingConfig(temperature=0, max_new_tokens=2)),
        vectors=[],
        outputs={},
    )


def test_exported_script_sets_the_apps_thread_count(tmp_path):
    script = tmp_path / "reproduce.py"
    script.write_text(_transcript().to_script(), encoding="utf-8")
    runner = (
        "import runpy, sys, torch; sys.argv = [sys.argv[1], '--json']; runpy.run_path(sys.argv[0], "
        "run_name='__main__'); print(torch.get_num_threads())"
    )
    env = {**os.environ, "ACTADD_TORCH_THREADS": "3", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", runner, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert set(json.loads(lines[-2])) == {"unsteered", "steered"}
    assert lines[-1] == "3"  # OMP_NUM_THREADS=1 alone would give 1


def test_sweep_script_sets_threads_before_loading(gpt2):
    from engine.experiments import SweepSpec
    from engine.transcript import sweep_script

    spec = SweepSpec(
        vector=capture_actadd(gpt2, "Love", "Hate", 1), coeffs=[0.0], targets=["x"], prompts=["Hi"]
    )
    text = sweep_script(spec, "v.safetensors", {"source": "demo"})
    compile(text, "sweep.py", "exec")
    assert 0 < text.index("use_app_threads()") < text.index("loaded = load_model(")


# ---- Stop ends the current forward pass at the next block -----------------------------------------------
def _block_spy(loaded, set_on_call: int, event: threading.Event):
    """Hooks of our own: block 1's pre-hook sets `event` on its n-th call; forward hooks count the blocks
    that finish after that."""
    state = {"calls": 0, "after": 0}

    def pre(module, args):
        state["calls"] += 1
        if state["calls"] == set_on_call:
            event.set()

    def post(module, args, output):
        if event.is_set():
            state["after"] += 1

    handles = [loaded.blocks[1].register_forward_pre_hook(pre)]
    handles += [block.register_forward_hook(post) for block in loaded.blocks]
    return state, handles


@pytest.mark.parametrize(("set_on_call", "tokens"), [(1, 0), (3, 2)])  # the prompt pass, a decode step
def test_cancel_stops_within_the_current_forward_pass(gpt2, set_on_call, tokens, monkeypatch):
    monkeypatch.setattr(cancellation, "SLOW_TOKEN_SECONDS", 0.0)  # every token counts as slow
    event = threading.Event()
    vector = capture_actadd(gpt2, "Love", "Hate", 1)
    before = [(dict(b._forward_pre_hooks), dict(b._forward_hooks)) for b in gpt2.blocks]
    state, handles = _block_spy(gpt2, set_on_call, event)
    try:
        result = generate(
            gpt2,
            PROMPT,
            [[], [Steer(vector, 2.0, mode="all")]],
            SamplingConfig(temperature=0, max_new_tokens=10),
            cancel=event,
            effect_rows=[1],
        )
    finally:
        for handle in handles:
            handle.remove()
    assert state["after"] == 0  # no block ran once Stop was pressed (before: the rest of the pass ran)
    assert result.cancelled and [r.finish_reason for r in result.rows] == ["cancelled", "cancelled"]
    assert [len(r.token_ids) for r in result.rows] == [tokens, tokens]
    assert hook_count(gpt2.blocks) == 0
    after = [(dict(b._forward_pre_hooks), dict(b._forward_hooks)) for b in gpt2.blocks]
    assert after == before, f"hooks left on the blocks: before {before}, after {after}"


def _cancel_hooks_per_token(loaded) -> tuple[list[int], object]:
    """How many blocks carry the per-block Stop check at each token event (a list, and the callback)."""
    seen: list[int] = []

    def on_token(event) -> None:
        if event.row == 0 and event.token_id >= 0:  # not the final flush of held-back text
            seen.append(
                sum(
                    any(
                        "BlockChecks" in getattr(h, "__qualname__", "") for h in b._forward_pre_hooks.values()
                    )
                    for b in loaded.blocks
                )
            )

    return seen, on_token


def test_fast_tokens_run_without_the_per_block_check_and_still_stop_between_tokens(gpt2, monkeypatch):
    """Below SLOW_TOKEN_SECONDS a token is stopped in time between tokens: the per-block hooks go after
    the first token (the prompt pass keeps them), and a Stop during a decode step ends the generation
    before the next token."""
    monkeypatch.setattr(cancellation, "SLOW_TOKEN_SECONDS", 1e9)  # every token counts as fast
    sampling = SamplingConfig(temperature=0, max_new_tokens=6)
    seen, on_token = _cancel_hooks_per_token(gpt2)
    full = generate(gpt2, PROMPT, None, sampling, on_token=on_token)
    assert seen == [0] * 6  # dropped after the prompt pass (the Stop below shows that pass is checked)
    assert hook_count(gpt2.blocks) == 0

    event = threading.Event()
    state, handles = _block_spy(gpt2, 3, event)  # Stop pressed inside the second decode step
    try:
        stopped = generate(gpt2, PROMPT, None, sampling, cancel=event)
    finally:
        for handle in handles:
            handle.remove()
    assert state["after"] > 0  # that pass ran to its end...
    assert stopped.cancelled and stopped.rows[0].token_ids == full.rows[0].token_ids[:3]  # ...no more
    assert stopped.rows[0].finish_reason == "cancelled"

    event = threading.Event()
    state, handles = _block_spy(gpt2, 1, event)  # Stop pressed inside the prompt pass: checked per block
    try:
        stopped = generate(gpt2, PROMPT, None, sampling, cancel=event)
    finally:
        for handle in handles:
            handle.remove()
    assert state["after"] == 0 and stopped.cancelled and stopped.rows[0].token_ids == []


def test_slow_tokens_keep_the_per_block_check(gpt2):
    """With the real threshold: a model whose passes take longer than SLOW_TOKEN_SECONDS keeps the check
    on every block for every pass."""
    slow = cancellation.SLOW_TOKEN_SECONDS

    def sleep(module, args):
        time.sleep(slow * 1.2)

    handle = gpt2.blocks[0].register_forward_pre_hook(sleep)
    seen, on_token = _cancel_hooks_per_token(gpt2)
    try:
        generate(gpt2, PROMPT, None, SamplingConfig(temperature=0, max_new_tokens=3), on_token=on_token)
    finally:
        handle.remove()
    assert seen == [len(gpt2.blocks)] * 3
    assert hook_count(gpt2.blocks) == 0


def test_generation_after_a_mid_pass_cancel_is_unaffected(gpt2, monkeypatch):
    monkeypatch.setattr(cancellation, "SLOW_TOKEN_SECONDS", 0.0)  # the decode step is checked per block
    sampling = SamplingConfig(temperature=0, max_new_tokens=6)
    before = generate(gpt2, PROMPT, None, sampling).rows[0].token_ids
    event = threading.Event()
    state, handles = _block_spy(gpt2, 2, event)
    try:
        stopped = generate(gpt2, PROMPT, None, sampling, cancel=event)
    finally:
        for handle in handles:
            handle.remove()
    assert stopped.cancelled and state["after"] == 0 and len(stopped.rows[0].token_ids) == 1
    assert generate(gpt2, PROMPT, None, sampling).rows[0].token_ids == before


# ---- one size format ------------------------------------------------------------------------------------
def test_format_megabytes():
    assert format_megabytes(1468.0) == "1.43 GB"
    assert format_megabytes(1023.4) == "1023 MB"
    assert format_megabytes(512) == "512 MB"
    assert format_megabytes(None) == "–"
    assert format_megabytes(float("nan")) == "–"
