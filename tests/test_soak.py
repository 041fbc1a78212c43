"""Soak, short versions (issue 6: long-running): many generations in a row with vectors toggled on and off;
no hooks left on the model after any of them, no thread leak, bounded memory growth after warm-up.

- through the engine: the performance engineer's benchmark script `bench/soak.py` (300 generations by
  default) at a short length, with all three of its targets asserted (tests/test_bench_smoke.py only runs
  it for 14 generations and checks the hooks);
- through the GUI's model worker (`gui.controller.WorkerController`), the way the app runs them: queued
  requests, streamed tokens, vectors enabled and disabled, live coefficient changes and stops.

The 300-generation run is `python -m bench.soak` (or `--tiny`).
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
MEMORY_GROWTH_MB = 50.0


def _sample() -> tuple[float, int, int]:
    gc.collect()
    return (
        psutil.Process().memory_info().rss / 2**20,
        psutil.Process().num_threads(),
        threading.active_count(),
    )


def test_engine_soak_with_vectors_toggled(gpt2):
    """24 generations on the tiny GPT-2 in this process: unsteered, ActAdd, directions, side by side, a sweep
    batch, a live toggle from the token callback, a cancel, and a forward that raises."""
    from engine import (
        SamplingConfig,
        Steer,
        SteeringPlan,
        capture_actadd,
        capture_mean_diff,
        generate,
        hook_count,
    )
    from engine.pairs import PromptPair

    love = capture_actadd(gpt2, "Love", "Hate", layers=1)
    direction = capture_mean_diff(gpt2, [PromptPair("happy", "sad"), PromptPair("calm", "angry")], layers=2)
    sampling = SamplingConfig(max_new_tokens=4, seed=0)
    prompt = "I think that the weather"

    def toggled():
        plan = SteeringPlan([[Steer(direction, 4.0, mode="all"), Steer(love, 4.0)]])

        def on_token(event):
            plan.set_coefficient(0, event.step % 2, 0.0 if event.step % 2 else 4.0)

        generate(gpt2, prompt, plan, sampling, on_token=on_token)

    def cancelled():
        cancel = threading.Event()
        generate(gpt2, prompt, [[Steer(love, 4.0)]], sampling, cancel=cancel, on_token=lambda e: cancel.set())

    def failing():
        def boom(event):
            raise RuntimeError("a callback that fails mid-generation")

        with pytest.raises(RuntimeError):
            generate(gpt2, prompt, [[Steer(love, 4.0)]], sampling, on_token=boom)

    kinds = [
        lambda: generate(gpt2, prompt, None, sampling),
        lambda: generate(gpt2, prompt, [[Steer(love, 6.0)]], sampling),
        lambda: generate(gpt2, prompt, [[Steer(direction, -4.0, mode="all")]], sampling),
        lambda: generate(gpt2, prompt, [[], [Steer(love, 4.0), Steer(direction, 2.0)]], sampling),
        lambda: generate(gpt2, prompt, [[Steer(love, c)] for c in (-4, 0, 4, 8)], sampling),
        toggled,
        cancelled,
        failing,
    ]
    warmup, n = len(kinds), 3 * len(kinds)
    leftover = []
    for i in range(n):
        kinds[i % len(kinds)]()
        if hook_count(gpt2.blocks) != 0:
            leftover.append(i)
        if i + 1 == warmup:
            rss_warm, threads_warm, py_threads_warm = _sample()
    assert leftover == []
    rss_end, threads_end, py_threads_end = _sample()
    assert rss_end - rss_warm < MEMORY_GROWTH_MB, f"grew {rss_end - rss_warm:.1f} MB after warm-up"
    assert threads_end <= threads_warm and py_threads_end <= py_threads_warm


@pytest.mark.slow
def test_bench_soak_script_meets_every_target(tmp_path):
    """The benchmark script (bench/soak.py), 105 generations on a tiny model, every target asserted."""
    out = tmp_path / "soak.json"
    args = ["--tiny", "--n", "105", "--sample-every", "15", "--new-tokens", "8", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert sum(data["details"]["generations"].values()) == 105
    failed = [t for t in data["targets"] if not t["passed"]]
    assert failed == [], failed


@pytest.mark.gui
def test_worker_soak_with_vectors_toggled(qtbot, model_dirs, tmp_path, monkeypatch):
    worker_soak(qtbot, model_dirs, tmp_path, monkeypatch, n=36, warmup=8)


@pytest.mark.gui
@pytest.mark.slow
def test_worker_soak_300_generations(qtbot, model_dirs, tmp_path, monkeypatch):
    """The issue's 300 generations in a row, through the worker."""
    worker_soak(qtbot, model_dirs, tmp_path, monkeypatch, n=300, warmup=30)


def worker_soak(qtbot, model_dirs, tmp_path, monkeypatch, *, n: int, warmup: int) -> None:
    monkeypatch.setenv("ACTADD_TORCH_THREADS", "1")
    from engine.generation import SamplingConfig
    from engine.steering import hook_count
    from gui.controller import WorkerController
    from gui.jobs import ActiveVector, CaptureRequest, GenerateRequest, LoadRequest

    controller = WorkerController()
    try:
        job = controller.load(LoadRequest(str(model_dirs["gpt2"]), device="cpu"))
        qtbot.waitSignals([controller.model_loaded, job.finished], order="strict", timeout=60_000).wait()
        assert not controller.busy
        paths = []
        for name, positive, negative, layer in [("love", "Love", "Hate", 1), ("calm", "Calm", "Anger", 2)]:
            done = []
            job = controller.capture(
                CaptureRequest(
                    method="actadd",
                    layers=[layer],
                    name=name,
                    library_root=str(tmp_path / "lib"),
                    positive=positive,
                    negative=negative,
                )
            )
            job.done.connect(done.append)
            qtbot.waitSignal(job.finished, timeout=30_000).wait()
            paths.append(done[-1].path)

        worker = controller.worker
        rng = random.Random(0)
        results = []  # GenerationResult per generation
        live_changes = []  # LiveChange lists, one per generation
        leftover_hooks = []
        for i in range(n):
            vectors = [
                ActiveVector(
                    path, name, rng.choice([-6.0, 0.0, 4.0, 8.0]), mode=rng.choice([None, "all", "front"])
                )
                for path, name in zip(paths, ["love", "calm"], strict=True)
            ]
            for vector in vectors:
                vector.enabled = rng.random() < 0.6
            request = GenerateRequest(
                prompt=rng.choice(["I think that", "The weather today", "My friend said"]),
                vectors=vectors,
                sampling=SamplingConfig(temperature=rng.choice([0, 1.0]), max_new_tokens=8, seed=i),
                effect=i % 3 == 0,
            )
            action = i % 4  # 0: plain, 1: toggle live mid-stream, 2: stop mid-stream, 3: plain
            state = {"tokens": 0}
            job = controller.generate(request)

            def on_token(delta, action=action, state=state, job=job):
                state["tokens"] += 1
                if action == 1 and state["tokens"] in (2, 6):  # the sliders: off, then on again
                    job.set_coefficient_at(0, 0.0 if state["tokens"] == 2 else 6.0)
                    job.set_coefficient_at(1, 5.0 if state["tokens"] == 2 else 0.0)
                if action == 2 and state["tokens"] == 3:
                    controller.stop()

            changes = []
            live_changes.append(changes)
            job.token.connect(on_token)
            job.coefficient_applied.connect(changes.append)
            job.done.connect(results.append)
            qtbot.waitSignal(job.finished, timeout=30_000).wait()
            assert not controller.busy
            if hook_count(worker.loaded.blocks) != 0:  # the worker is idle: its model can be inspected
                leftover_hooks.append(i)
            if i + 1 == warmup:
                rss_warm, threads_warm, py_threads_warm = _sample()
        assert (
            len(results) == n
            and any(r.cancelled for r in results)
            and any(changes for changes in live_changes)
        )
        assert leftover_hooks == []
        rss_end, threads_end, py_threads_end = _sample()
        assert rss_end - rss_warm < MEMORY_GROWTH_MB, f"grew {rss_end - rss_warm:.1f} MB after warm-up"
        assert threads_end <= threads_warm and py_threads_end <= py_threads_warm
    finally:
        assert controller.shutdown(3000)
