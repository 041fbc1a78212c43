"""`python main.py sweep`: sweeps write CSV + PNG, --json is one object, bad input is one line and exit 2."""

from __future__ import annotations

import csv
import json

import pytest

from engine.cli import main as cli_main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sweep_pair_writes_csv_and_png(model_dirs, tmp_path, capsys):
    code, out, _ = _run(
        capsys, "sweep", "--model", str(model_dirs["gpt2"]), "--positive", "Love", "--negative", "Hate",
        "--coeffs", "-4,0,4", "--layers", "0,1", "--prompt", "I went up to", "--prompt", "The team",
        "--samples", "2", "--max-new-tokens", "4", "--targets", "love,bride", "--out", str(tmp_path),
        "--name", "love",
    )  # fmt: skip
    assert code == 0
    assert "wrote" in out
    rows = list(csv.DictReader((tmp_path / "love.csv").open()))
    assert len(rows) == 6
    assert {(r["layer"], float(r["coeff"])) for r in rows} == {(l, c) for l in "01" for c in (-4.0, 0.0, 4.0)}
    assert (tmp_path / "love.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_json_target_prob(model_dirs, tmp_path, capsys):
    code, out, _ = _run(
        capsys, "sweep", "--model", str(model_dirs["gpt2"]), "--positive", "Love", "--negative", "Hate",
        "--coeffs", "-2,0,2", "--metric", "target-prob", "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0
    payload = json.loads(out)
    assert payload["metric"] == "target-prob"
    assert payload["layers"] == [0, 1, 2]  # a pair sweeps every layer by default
    assert len(payload["values"]) == 3 and len(payload["values"][0]) == 3
    assert payload["best"] is not None
    assert (tmp_path / "sweep.csv").exists() and (tmp_path / "sweep.png").exists()


def test_sweep_library_vector_perplexity(model_dirs, tmp_path, capsys):
    library = tmp_path / "lib"
    code, _, _ = _run(
        capsys, "capture", "--model", str(model_dirs["gpt2"]), "--positive", " weddings", "--negative", " ",
        "--layer", "1", "--name", "wed", "--library", str(library), "--json",
    )  # fmt: skip
    assert code == 0
    text = tmp_path / "ref.txt"
    text.write_text("The team won the match; sports fans cheered in the stadium.")
    code, out, _ = _run(
        capsys, "sweep", "--model", str(model_dirs["gpt2"]), "--vector", "wed", "--library", str(library),
        "--coeffs", "0,2,4", "--metric", "perplexity", "--reference-file", str(text), "--out", str(tmp_path),
        "--json",
    )  # fmt: skip
    assert code == 0
    payload = json.loads(out)
    assert payload["layers"] == [1]  # the vector's own layer
    assert all(v > 1 for v in payload["values"][0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--coeffs", "1,2"], "--vector NAME_OR_FILE, or --positive and --negative"),
        (["--positive", "a", "--negative", "b", "--coeffs", "-4,0,x"], "--coeffs: 'x' is not a number"),
        (["--positive", "a", "--negative", "b", "--coeffs", "1,nan"], "not a finite number"),
        (["--positive", "a", "--negative", "b", "--layers", "0,9"], "out of range"),
        (["--positive", "a", "--negative", "b", "--metric", "perplexity"], "needs --reference-text"),
        (["--vector", "v", "--positive", "a", "--negative", "b"], "either --vector or"),
        (["--vector", "no-such-vector"], "no vector named"),
        (["--experiment", "topic", "--positive", "a", "--negative", "b"], "uses its own vectors"),
        (["--experiment", "nonsense"], "invalid choice"),
        (["--positive", "a", "--negative", "b", "--samples", "0", "--targets", "a"], "samples per prompt"),
        (["--positive", "a", "--negative", "b", "--coeffs", "0,2n,4"], "mixes raw coefficients (4)"),
        (["--positive", "a", "--negative", "b", "--coeffs", "2xn"], "'2xn' is neither a coefficient"),
        (["--positive", "a", "--negative", "b", "--coeffs", "0.5N"], "'0.5N' is not a number; expected a"),
        (["--positive", "a", "--negative", "b", "--coeffs", ","], "--coeffs is empty"),
        (
            ["--positive", "a", "--negative", "b", "--coeffs", "1n", "--mode", "ablate", "--targets", "a"],
            "mode ablate takes raw",
        ),
        # the sampling flags reach the SamplingConfig (sampling_from_args), which refuses them
        (["--positive", "a", "--negative", "b", "--max-new-tokens", "0", "--targets", "a"], "max_new_tokens"),
        (["--positive", "a", "--negative", "b", "--top-p", "2", "--targets", "a"], "0 < top_p <= 1"),
    ],
)
def test_sweep_bad_input_is_one_line_and_exit_2(model_dirs, tmp_path, capsys, args, message):
    code, out, err = _run(
        capsys, "sweep", "--model", str(model_dirs["gpt2"]), "--library", str(tmp_path / "lib"),
        "--out", str(tmp_path), *args,
    )  # fmt: skip
    assert code == 2
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_sweep_in_normalised_strengths_applies_s_residual_norms_per_layer(model_dirs, gpt2, tmp_path, capsys):
    """`--coeffs 0,2n,8n`: the grid is in strengths; each cell applies c = s * r_l / |v_l| at its layer."""
    from engine import capture_actadd
    from engine.residual_norms import residual_norm_profile
    from engine.strength import per_position_norm

    code, out, err = _run(
        capsys, "sweep", "--model", str(model_dirs["gpt2"]), "--positive", "Love", "--negative", "Hate",
        "--coeffs", "0,2n,8n", "--layers", "0,2", "--prompt", "I think", "--samples", "1",
        "--max-new-tokens", "2", "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(out)
    assert payload["strengths"] is True and payload["coeffs"] == [0.0, 2.0, 8.0]
    norms = residual_norm_profile(gpt2)
    applied = {}
    for cell in payload["cells"]:
        size = per_position_norm(capture_actadd(gpt2, "Love", "Hate", cell["layer"]).layers[cell["layer"]])
        assert cell["steer_coeff"] == pytest.approx(cell["coeff"] * norms[cell["layer"]] / size, rel=1e-4)
        applied[(cell["layer"], cell["coeff"])] = cell["steer_coeff"]
    assert applied[(0, 0.0)] == 0.0 and applied[(0, 8.0)] != pytest.approx(applied[(2, 8.0)])
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert sorted(float(r["steer_coeff"]) for r in rows) == pytest.approx(sorted(applied.values()), rel=1e-5)


def test_sweep_without_coeffs_uses_strengths_for_the_vectors_mode(model_dirs, tmp_path, capsys):
    base = ["sweep", "--model", str(model_dirs["gpt2"]), "--positive", "Love", "--negative", "Hate",
            "--layers", "1", "--prompt", "I think", "--samples", "1", "--max-new-tokens", "2",
            "--out", str(tmp_path), "--json"]  # fmt: skip
    code, out, err = _run(capsys, *base)
    assert code == 0, err
    front = json.loads(out)
    assert front["strengths"] and front["coeffs"] == [-16.0, -4.0, 0.0, 4.0, 16.0]
    code, out, err = _run(capsys, *base, "--mode", "all")
    assert code == 0, err
    assert json.loads(out)["coeffs"] == [-1.0, -0.25, 0.0, 0.25, 1.0]
    code, out, err = _run(capsys, *base, "--coeffs", "-4,0,4")  # raw c stays raw
    assert code == 0, err
    raw = json.loads(out)
    assert not raw["strengths"] and all(c["steer_coeff"] == c["coeff"] for c in raw["cells"])
    assert all(c["effect"] is not None for c in raw["cells"] if c["coeff"] != 0)  # measured by default
    code, out, err = _run(capsys, *base, "--coeffs", "-4,0,4", "--no-effect")
    assert code == 0, err
    assert all(c["effect"] is None for c in json.loads(out)["cells"])


def test_experiment_size_follows_samples_and_max_new_tokens(model_dirs, tmp_path, capsys):
    code, _out, err = _run(
        capsys, "sweep", "--experiment", "topic", "--quick", "--samples", "1", "--max-new-tokens", "3",
        "--layers", "1", "--model", str(model_dirs["gpt2"]), "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0, err
    settings = json.loads((tmp_path / "summary.json").read_text())["_model"]["settings"]
    assert settings["samples"] == 1 and settings["max_new_tokens"] == 3 and settings["layers"] == [1]
    rows = list(csv.DictReader((tmp_path / "topic.csv").open()))
    assert rows and {int(r["n_samples"]) for r in rows} == {settings["n_prompts"]}  # prompts x 1 sample


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samples", "0"], "--samples must be between"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be"),
    ],
)
def test_experiment_size_bad_input_is_one_line_and_exit_2(model_dirs, tmp_path, capsys, args, message):
    code, out, err = _run(
        capsys, "sweep", "--experiment", "topic", "--quick", "--model", str(model_dirs["gpt2"]),
        "--out", str(tmp_path), *args,
    )  # fmt: skip
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and out == "" and len(lines) == 1 and message in lines[0], err


def test_sweep_help_lists_experiments(capsys):
    code, out, _ = _run(capsys, "sweep", "--help")
    assert code == 0
    assert "--experiment" in out and "quantization" in out and "--coeffs" in out


@pytest.mark.slow
def test_sweep_experiment_quick_writes_report_files(model_dirs, tmp_path, capsys):
    code, out, _ = _run(
        capsys, "sweep", "--experiment", "topic", "--experiment", "perplexity", "--quick",
        "--model", str(model_dirs["gpt2"]), "--out", str(tmp_path), "--json",
    )  # fmt: skip
    assert code == 0
    payload = json.loads(out)
    assert set(payload["experiments"]) == {"topic", "perplexity"}
    for name in ("topic.csv", "topic_heatmap.png", "topic_lines.png", "perplexity.png", "summary.json"):
        assert (tmp_path / name).exists(), name
