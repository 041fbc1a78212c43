"""The CLI contract end to end on a random-init GPT-2 and Llama saved to folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import ModelFingerprint, SteeringVector, save_vector
from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "I went up to my friend and said"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_capture_then_generate_with_compare(model_dirs, tmp_path, capsys, arch):
    model, lib = str(model_dirs[arch]), str(tmp_path / "lib")
    code, out, err = run(
        capsys,
        "capture",
        "--model",
        model,
        "--positive",
        "Love",
        "--negative",
        "Hate",
        "--layer",
        "1",
        "--name",
        "love-hate",
        "--library",
        lib,
        "--json",
    )
    assert code == 0, err
    captured = json.loads(out)
    assert {"name", "path", "layer", "method", "shape"} <= captured.keys()
    assert captured["layer"] == 1 and captured["method"] == "actadd" and captured["shape"][1] == 64
    assert Path(captured["path"]).is_file()

    code, out, err = run(
        capsys,
        "generate",
        "--model",
        model,
        "--prompt",
        PROMPT,
        "--steer",
        "love-hate:30",
        "--compare",
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
        "--library",
        lib,
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert {"text", "token_ids", "prompt_token_ids", "unsteered"} <= result.keys()
    assert len(result["token_ids"]) == 6 and {"text", "token_ids"} <= result["unsteered"].keys()
    assert result["token_ids"] != result["unsteered"]["token_ids"]

    # Same batch semantics: the unsteered row equals a plain run, the steered row a steered-only run.
    code, out, _ = run(
        capsys,
        "generate",
        "--model",
        model,
        "--prompt",
        PROMPT,
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
        "--library",
        lib,
        "--json",
    )
    assert json.loads(out)["token_ids"] == result["unsteered"]["token_ids"]
    code, out, _ = run(
        capsys,
        "generate",
        "--model",
        model,
        "--prompt",
        PROMPT,
        "--steer",
        f"{captured['path']}:30@1",
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
        "--json",
    )
    assert json.loads(out)["token_ids"] == result["token_ids"]


def test_mean_diff_and_pca_from_a_pairs_file(model_dirs, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps({"positive": f"Love {w}", "negative": f"Hate {w}"}) for w in ("rain", "food", "trains")
        )
    )
    for method in ("mean-diff", "pca"):
        code, out, err = run(
            capsys,
            "capture",
            "--model",
            str(model_dirs["gpt2"]),
            "--pairs",
            str(pairs),
            "--layer",
            "0",
            "--layer",
            "2",
            "--method",
            method,
            "--name",
            method,
            "--library",
            str(tmp_path / "lib"),
            "--json",
        )
        assert code == 0, err
        assert json.loads(out)["shape"] == [64] and json.loads(out)["layers"] == [0, 2]


@pytest.fixture
def library_with_vectors(model_dirs, tmp_path, capsys):
    lib = tmp_path / "lib"
    code, _, err = run(
        capsys,
        "capture",
        "--model",
        str(model_dirs["gpt2"]),
        "--positive",
        "I talk about weddings constantly",
        "--negative",
        "I do not",
        "--layer",
        "1",
        "--name",
        "long",
        "--library",
        str(lib),
    )
    assert code == 0, err
    save_vector(
        SteeringVector({1: torch.ones(32)}, method="imported", name="narrow"), lib / "narrow.safetensors"
    )
    other = ModelFingerprint("llama", 64, 3, "someone-else", "other")
    save_vector(
        SteeringVector({1: torch.ones(64)}, method="imported", fingerprint=other), lib / "foreign.safetensors"
    )
    (lib / "notes.safetensors").write_text("this is not a vector")
    return lib


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "/nonexistent/model"], "no such model folder"),
        (["--steer", "long:1@7"], "layer 7 is out of range"),
        (["--steer", "long:nan"], "not a finite number"),
        (["--steer", "long:inf"], "not a finite number"),
        (["--steer", "narrow:1"], "hidden size 32, the model has 64"),
        (["--steer", "foreign:1"], "captured on another model"),
        (["--steer", "long:2", "--prompt", "Hi"], "has 10 tokens but the prompt has only 3"),
        (["--prompt", "   "], "the prompt is empty"),
        (["--steer", "notes"], "not a vector file"),
        (["--steer", "missing"], "no vector named 'missing'"),
        (["--temperature", "-1"], "temperature"),
        (["--max-new-tokens", "abc"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(model_dirs, library_with_vectors, capsys, extra, message):
    argv = [
        "generate",
        "--model",
        str(model_dirs["gpt2"]),
        "--prompt",
        PROMPT,
        "--library",
        str(library_with_vectors),
        "--max-new-tokens",
        "2",
        *extra,
    ]
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip() and "\r" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err and out == ""


def test_capture_errors(model_dirs, tmp_path, capsys):
    model, lib = str(model_dirs["gpt2"]), str(tmp_path / "lib")
    base = ["capture", "--model", model, "--library", lib, "--positive", "Love", "--negative", "Hate"]
    assert run(capsys, *base, "--layer", "9", "--name", "x")[0] == 2
    assert run(capsys, *base, "--layer", "0", "--name", "../escape")[0] == 2
    assert run(capsys, *base, "--layer", "0", "--name", "ok")[0] == 0
    code, _, err = run(capsys, *base, "--layer", "0", "--name", "ok")
    assert code == 2 and "--force" in err
    assert run(capsys, *base, "--layer", "0", "--name", "ok", "--force")[0] == 0
    code, _, err = run(capsys, "capture", "--model", model, "--library", lib, "--layer", "0", "--name", "y")
    assert code == 2 and "needs --positive and --negative" in err


def test_real_subprocess_help_and_json(model_dirs, tmp_path):
    env = {**os.environ, "ACTADD_LIBRARY": str(tmp_path / "lib")}
    for command in ("capture", "generate"):
        help_run = subprocess.run(
            [sys.executable, "main.py", command, "--help"], cwd=ROOT, capture_output=True, text=True, env=env
        )
        assert help_run.returncode == 0 and "--json" in help_run.stdout
    done = subprocess.run(
        [
            sys.executable,
            "main.py",
            "generate",
            "--model",
            str(model_dirs["llama"]),
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "3",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["token_ids"]) == 3
    # The demo model's pad token is its BOS: steered generation must not print transformers' false
    # "pass an attention_mask" alarm.
    from engine import capture_actadd, load_model, save_vector

    save_vector(capture_actadd(load_model("demo"), "Love", "Hate", 0), tmp_path / "love.safetensors")
    demo = subprocess.run(
        [
            sys.executable,
            "main.py",
            "generate",
            "--prompt",
            PROMPT,
            "--steer",
            f"{tmp_path / 'love.safetensors'}:4",
            "--max-new-tokens",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k != "TRANSFORMERS_VERBOSITY"},  # as a user runs it
        timeout=300,
    )
    assert demo.returncode == 0 and demo.stdout.startswith(PROMPT), demo.stderr
    assert "attention_mask" not in demo.stderr, demo.stderr
    bad = subprocess.run(
        [sys.executable, "main.py", "generate", "--model", str(tmp_path / "nope"), "--prompt", "x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert (
        bad.returncode == 2 and "Traceback" not in bad.stderr and "error: no such model folder" in bad.stderr
    )
