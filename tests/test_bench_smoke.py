"""Smoke tests of bench/: each benchmark's code path runs end to end at tiny sizes and writes the JSON
structure the README table is built from. Nothing here checks a timing: the numbers of tiny runs mean
nothing. What is checked exactly is correctness that the benchmarks verify on the way (padding, hooks
left behind, identical tokens against the peers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV_KEYS = {"cpu", "cpu_count", "torch", "transformers", "bitsandbytes", "python"}


def run_bench(module: str, *args: str, out: Path, timeout: int = 600) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


def check_result(data: dict, benchmark: str) -> None:
    assert data["benchmark"] == benchmark
    assert set(data["environment"]) >= ENV_KEYS
    assert len(data["load_average_start"]) == 3 and len(data["load_average_end"]) == 3
    for target in data["targets"]:
        assert {"id", "name", "value", "op", "threshold", "unit", "passed"} <= set(target)
        assert target["op"] in (">=", "<=")
        assert isinstance(target["passed"], bool)
    assert data["all_passed"] == all(t["passed"] for t in data["targets"])


def test_steering_smoke(tmp_path):
    data = run_bench("bench.bench_steering", "--tiny", out=tmp_path / "steering.json")
    check_result(data, "steering")
    ids = {t["id"] for t in data["targets"]}
    assert {"1a", "1b", "2", "3", "4a", "4b"} <= ids
    details = data["details"]
    for shape in ("tiny-gpt2", "tiny-llama"):
        hooks = details[f"hooks_{shape}"]
        assert set(hooks["steered_over_unsteered_tokens_per_second"]) == {
            "front x1",
            "front x4",
            "all x1",
            "all x4",
        }
        assert all(us > 0 for us in hooks["hook_us_per_decode_token"].values())
    # padding and masking of the batched mean-diff are exact, whatever the timing
    assert details["capture_tiny-gpt2"]["mean_diff"]["padding_correct"]
    assert details["capture_tiny-llama"]["mean_diff_correctness"]["padding_correct"]
    assert (
        set(details["batches_tiny-gpt2"]["rows_tokens"]["sweep batch"])
        and details["batches_tiny-gpt2"]["sweep"]
    )


def test_callgrind_counts_are_read_by_label(tmp_path):
    """bench_peer_instructions reads one count per dumped file, by the label its client request gave."""
    from bench.bench_peer_instructions import read_counts

    header = "version: 1\ncreator: callgrind-3.19.0\npid: 7\ncmd:  python x.py\npart: {part}\n"
    for part, (label, total) in enumerate([("ours|0", 1096849325), ("repeng|0", 1093597028)], start=1):
        (tmp_path / f"callgrind.out.{part}").write_text(
            header.format(part=part)
            + f"desc: I1 cache: \ndesc: Trigger: Client Request: {label}\n\npositions: line\nevents: Ir\n"
            + f"summary: {total}\n\nfn=(1) main\n0 {total}\n\ntotals: {total}\n",
            encoding="utf-8",
        )
    (tmp_path / "callgrind.out").write_text("version: 1\n", encoding="utf-8")  # the empty final dump
    (tmp_path / "other.txt").write_text("summary: 5\n", encoding="utf-8")
    assert read_counts(tmp_path) == {"ours|0": 1096849325, "repeng|0": 1093597028}


@pytest.mark.slow
def test_peer_instructions_smoke(tmp_path):
    """The whole path under valgrind on the tiny GPT-2 (several minutes: imports run under valgrind)."""
    data = run_bench("bench.bench_peer_instructions", "--tiny", out=tmp_path / "pi.json", timeout=3000)
    check_result(data, "peer_instructions")
    details = data["details"]
    if "error" in details:  # no valgrind/gcc/headers or no peer libraries here: said, not crashed
        assert "missing" in details["error"] or "setup_peers.sh" in details["error"]
        return
    assert set(details["instructions"]) == {
        "ours", "repeng", "steering-vectors", "hf unsteered", "ours unsteered",
    }  # fmt: skip
    assert all(n > 10**6 for counts in details["instructions"].values() for n in counts)
    assert {t["name"] for t in data["targets"]} == {
        "instructions per steered generation, repeng / ours",
        "instructions per steered generation, steering-vectors / ours",
    }


def test_peers_smoke(tmp_path):
    data = run_bench("bench.bench_peers", "--tiny", out=tmp_path / "peers.json")
    check_result(data, "peers")
    details = data["details"]
    if "peer_versions" not in details:  # bench/.venv-peers is not set up here
        assert "setup_peers.sh" in details["error"]
        return
    assert details["identical_greedy_tokens"], details["tokens"]
    assert details["steering_changes_tokens"]
    assert {t["name"] for t in data["targets"]} >= {
        "steered tok/s, ours / repeng",
        "steered tok/s, ours / steering-vectors",
    }


@pytest.mark.gui
def test_gui_latency_smoke(tmp_path):
    args = ("--tiny", "--stream-tokens", "8", "--idle-ms", "100")
    data = run_bench("bench.bench_gui_latency", *args, out=tmp_path / "gui.json")
    check_result(data, "gui_latency")
    assert {t["id"] for t in data["targets"]} == {"6", "7"}
    run = data["details"]["streaming"]["runs"][0]
    assert run["tokens"] > 0 and run["signals"] > 0


def test_real_models_smoke(tmp_path):
    # --tiny: a random tiny Llama stands in for SmolLM2 (tests must not rely on /tmp/models)
    data = run_bench("bench.bench_real_models", "--tiny", out=tmp_path / "real_models.json")
    check_result(data, "real_models")
    details = data["details"]
    assert [t["id"] for t in data["targets"] if t["id"] != "15c"] == ["15a", "15b", "15a"]
    for quantize in ("none", "4bit"):
        cost = details[f"cost_{quantize}"]
        assert cost["layer"] == 3  # --layer 6 clamped to the tiny model's last layer
        assert all(n > 0 for n in cost["new_tokens"].values())
    # the steered row of a side-by-side batch is the steered row alone, token for token
    assert details["cost_none"]["side_by_side_steered_row_matches_alone"]
    if "peers_error" in details:  # bench/.venv-peers is not set up here
        assert "setup_peers.sh" in details["peers_error"]
    else:
        names = {t["name"] for t in data["targets"] if t["id"] == "15c"}
        assert any(name.endswith("steered tok/s, ours / repeng") for name in names)
        assert details["peers"]["details"]["model"] == details["model"]


def test_memory_smoke(tmp_path):
    data = run_bench("bench.bench_memory", "--tiny", out=tmp_path / "memory.json")
    check_result(data, "memory")
    loads = data["details"]["loads"]
    assert set(loads) == {"none float32", "none float16", "8bit", "4bit", "4bit float16", "4bit bfloat16"}
    for label in ("none float32", "none float16", "4bit"):
        assert "error" not in loads[label], loads[label]
        assert loads[label]["weights_mb"] > 0 and loads[label]["forward_ok"]
    assert loads["none float16"]["weights_mb"] < loads["none float32"]["weights_mb"]
    assert "Linear4bit" in loads["4bit"]["linear_types"]


def test_model_listing_smoke(tmp_path):
    data = run_bench("bench.bench_model_listing", "--tiny", out=tmp_path / "model_listing.json")
    check_result(data, "model_listing")
    assert [t["id"] for t in data["targets"]] == ["14a", "14a", "14a"]  # cold, warm, `main.py models` warm
    details = data["details"]
    assert len(details["cold_s"]) == len(details["warm_s"]) == len(details["cold_plain_walk_s"]) == 1
    assert len(details["cli_cold_s"]) == len(details["cli_tables_kept_s"]) == len(details["cli_warm_s"]) == 1
    assert details["plain_walk_over_cold_cpu"] > 0


def test_gguf_open_smoke(tmp_path):
    data = run_bench("bench.bench_gguf_open", "--tiny", out=tmp_path / "gguf_open.json")
    check_result(data, "gguf_open")
    runs = data["details"]["runs"]["Q8_0"]
    for variant in ("ours, first open", "ours, cached", "transformers"):
        assert "error" not in runs[variant], runs[variant]
        assert runs[variant]["peak_rss_mb"] >= runs[variant]["baseline_rss_mb"] > 0
    assert runs["ours, first open"]["weights_mb"] == runs["transformers"]["weights_mb"] > 0
    assert [t["id"] for t in data["targets"]] == ["14"]


def test_soak_smoke(tmp_path):
    args = ("--tiny", "--n", "14", "--sample-every", "7", "--new-tokens", "4")
    data = run_bench("bench.soak", *args, out=tmp_path / "soak.json")
    check_result(data, "soak")
    details = data["details"]
    assert sum(details["generations"].values()) == 14
    assert details["generations_with_leftover_hooks"] == []


def test_serve_smoke(tmp_path):
    args = ("--quick", "--reps", "1", "--requests", "8", "--requests-per-rep", "4", "--max-tokens", "4")
    data = run_bench("bench.bench_serve", *args, out=tmp_path / "serve.json")
    check_result(data, "serve")
    details = data["details"]
    assert len(details["ratios"]) == 1 and details["ttft_ms_multi"]["n"] == 4
    assert [s[0] for s in details["rss_mb_samples"]][-1] == 8
    assert {t["id"] for t in data["targets"]} == {"serve-a", "serve-b", "serve-c"}


def test_gpu_check_degrades_without_cuda_and_dry_runs(tmp_path):
    import torch

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = [sys.executable, str(ROOT / "bench" / "gpu_check.py")]
    if not torch.cuda.is_available():
        plain = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert plain.returncode == 0
        report = json.loads(plain.stdout)  # exactly one JSON object on stdout
        assert "no CUDA" in report["error"]
    dry = subprocess.run(
        [*script, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    report = json.loads(dry.stdout)
    assert "error" not in report
    assert [m["shape"] for m in report["models"]] == ["tiny float32", "tiny 4bit"]
    for model in report["models"]:
        assert "error" not in model, model
        assert {"unsteered", "steered front", "steered all", "side by side", "sweep 8 rows"} <= set(
            model["tokens_per_second"]
        )
        assert model["sweep_time_ratio"] > 0


def test_run_all_table(tmp_path):
    from bench import common, run_all

    result = common.Result("soak")
    result.target("soak", "memory growth after warm-up", 1.5, "<=", 50.0, unit=" MB")
    result.target("soak", "generations with hooks left behind", 1.0, "<=", 0.0, unit="")
    result.write(tmp_path / "soak.json")
    table = run_all.table(tmp_path, ["soak", "steering"])
    assert "| # | measure | value | target | |" in table
    assert "| soak | memory growth after warm-up | 1.500 MB | <= 50.0 MB | ✅ |" in table
    assert "❌" in table and "| steering | — | not run | | |" in table
    assert "load average" in table
