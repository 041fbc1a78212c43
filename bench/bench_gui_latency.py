"""Targets 6 and 7: time to first token through the GUI worker, and event-loop stalls while streaming.

    QT_QPA_PLATFORM=offscreen python -m bench.bench_gui_latency
    QT_QPA_PLATFORM=offscreen python -m bench.bench_gui_latency --tiny

The GUI path is the app's own: `gui.controller.WorkerController` (which owns the `QThread` and the
`ModelWorker`) loads the model and runs `GenerateRequest`s; tokens come back as queued signals to the GUI
thread. Like the Generate tab, a request is one batch of two rows (unsteered, steered).

6. Time to first token: from `controller.generate(request)` on the GUI thread to the first `token`
   signal of the returned `Job` received there, against `engine.generate` called directly with the same rows, on the same
   loaded model and on the same OS thread (the worker's), measuring to its first `on_token` callback.
   Interleaved; the paired median ratio. The same direct call on the GUI thread is recorded too.
7. Responsiveness: a 5 ms `QTimer` on the GUI thread while tokens stream at full speed (no pacing,
   per-token KL on) into two of the Generate tab's `TokenPane`s, generation after generation until
   `--stream-tokens` tokens per row have streamed; the worst gap between ticks beyond the timer's
   interval. The same timer with no generation gives the machine's own noise floor.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

PROMPT = "I think that the weather in the city is going to be"
TICK_MS = 5


def model_source(tiny: bool) -> tuple[str, str]:
    from engine import DEMO_MODEL_DIR

    if not tiny and (DEMO_MODEL_DIR / "config.json").exists():
        return str(DEMO_MODEL_DIR), "demo"
    shape = "tiny-gpt2" if tiny else "demo-shape"
    return str(common.model_dir(shape)), shape


def wait_for(signal, condition=lambda *a: True, timeout_s: float = 120.0) -> tuple:
    """Run the Qt event loop until `signal` fires with arguments satisfying `condition`."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    got: list[tuple] = []

    def slot(*args):
        if not got and condition(*args):
            got.append(args)
            loop.quit()

    signal.connect(slot)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout_s * 1000))
    try:
        loop.exec()
    finally:
        timer.stop()
        signal.disconnect(slot)
    if not got:
        raise TimeoutError(f"no {signal} within {timeout_s} s")
    return got[0]


def on_thread(thread):
    """Run callables on another QThread: `runner.call.emit(fn)` runs `fn` there, then `runner.done` fires
    on the calling (GUI) thread, queued like the controller's signals, so `wait_for` cannot miss it."""
    from PySide6.QtCore import QObject, Signal, Slot

    class Relay(QObject):  # lives on the GUI thread
        call = Signal(object)
        done = Signal()

    class Runner(QObject):  # lives on `thread`
        done = Signal()

        @Slot(object)
        def run(self, fn) -> None:
            try:
                fn()
            finally:
                self.done.emit()

    relay, runner = Relay(), Runner()
    runner.moveToThread(thread)
    relay.call.connect(runner.run)  # queued: the runner lives on `thread`
    runner.done.connect(relay.done)  # queued back to the GUI thread
    relay.runner = runner  # keep it alive as long as the relay
    return relay


def run(args: argparse.Namespace) -> dict:
    import torch
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from engine import SamplingConfig, generate
    from engine.threads import default_torch_threads
    from gui.controller import WorkerController
    from gui.jobs import GenerateRequest, LoadRequest
    from gui.widgets.token_pane import TokenPane

    app = QApplication.instance() or QApplication([])
    result = common.Result("gui_latency", params=vars(args).copy())
    source, name = model_source(args.tiny)
    result.details["model"] = name
    threads = default_torch_threads()  # what the worker sets; the direct calls use the same
    torch.set_num_threads(threads)
    result.details["torch_threads"] = threads
    controller = WorkerController()
    try:
        job = controller.load(LoadRequest(source=source, device="cpu"))
        failures: list[str] = []
        job.failed.connect(failures.append)
        wait_for(job.finished, timeout_s=300)
        loaded = controller.worker.loaded
        if loaded is None:
            raise RuntimeError(f"the worker could not load {source}: {failures}")

        # ---- 6: time to first token -----------------------------------------------------------------------
        ttft_tokens = 4
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=ttft_tokens)

        def through_gui():
            started = time.perf_counter()
            first: list[float] = []

            def on_token(delta):
                if not first and delta.text:
                    first.append(time.perf_counter() - started)

            job = controller.generate(GenerateRequest(prompt=PROMPT, vectors=[], sampling=sampling))
            job.token.connect(on_token)  # before the event loop runs again: the job has not started yet
            wait_for(job.finished)
            return first[0]

        def direct(on_worker_thread: bool) -> float:
            """Plain `engine.generate`, timed from its call to its first `on_token` callback."""
            first: list[float] = []

            def plain() -> None:
                started = time.perf_counter()

                def on_token(event):
                    if not first and event.text:
                        first.append(time.perf_counter() - started)

                generate(loaded, PROMPT, [[], []], sampling, on_token=on_token)

            if on_worker_thread:
                worker_thread.call.emit(plain)
                wait_for(worker_thread.done)
            else:
                plain()
            return first[0]

        # The target compares the GUI path with plain generate run on the same OS thread, the worker's, so
        # the difference is the request and token signals and the worker's own code. Plain generate on the
        # GUI thread is recorded too: which thread runs a generation moved its time to first token by
        # -30% to +30% from run to run on this machine, far more than the ~1 ms the signals cost.
        worker_thread = on_thread(controller.worker.thread())
        reps = args.reps or (1 if args.tiny else 41)
        ttft: dict[str, list[float]] = {"gui": [], "direct": [], "direct on the GUI thread": []}
        runs = {
            "gui": through_gui,
            "direct": lambda: direct(on_worker_thread=True),
            "direct on the GUI thread": lambda: direct(on_worker_thread=False),
        }
        for fn in runs.values():
            fn()  # warm-up
        for rep in range(reps):
            for key in list(runs) if rep % 2 == 0 else reversed(list(runs)):
                ttft[key].append(runs[key]())
        ratio = common.paired_ratio(ttft, "gui", "direct")
        summary = common.summarize(ttft)
        result.details["time_to_first_token"] = {
            "summary_s": summary,
            "ratio_gui_over_direct": ratio,
            "ratio_gui_over_direct_on_the_gui_thread": common.paired_ratio(
                ttft, "gui", "direct on the GUI thread"
            ),
            "overhead_ms_median": 1000 * (summary["gui"]["median_s"] - summary["direct"]["median_s"]),
        }
        result.target(
            "6", f"time to first token, GUI worker / plain generate on its thread ({name})", ratio, "<=", 1.10
        )

        # ---- 7: event-loop stalls while streaming ---------------------------------------------------------
        panes = [TokenPane(), TokenPane()]
        for pane in panes:
            pane.resize(400, 300)
            pane.show()

        def show(delta):
            if delta.row <= 1:
                panes[delta.row].append_token(delta.text, delta.kl, delta.top)

        def ticking(work) -> tuple[list[float], object]:
            ticks: list[float] = []
            timer = QTimer()
            timer.setInterval(TICK_MS)
            timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
            timer.start()
            try:
                value = work()
            finally:
                timer.stop()
            return ticks, value

        def idle():
            loop = QEventLoop()
            QTimer.singleShot(args.idle_ms, loop.quit)
            loop.exec()

        def stream():
            """Generate back to back until `stream_tokens` tokens per row have streamed (a trained model
            such as the demo one may stop early at end-of-text)."""
            count = [0]
            tokens = [0]  # generated tokens, all rows
            generations = 0

            def counting(delta):
                count[0] += 1

            def done(result) -> None:
                tokens[0] += sum(len(row.token_ids) for row in result.rows)

            started = time.perf_counter()
            while tokens[0] < 2 * args.stream_tokens and generations < 20:
                for pane in panes:  # as the Generate tab does when a generation starts
                    pane.clear_text(PROMPT)
                job = controller.generate(
                    GenerateRequest(
                        prompt=PROMPT,
                        vectors=[],
                        sampling=SamplingConfig(temperature=0.0, max_new_tokens=args.stream_tokens),
                        effect=True,
                    )
                )
                job.token.connect(show)
                job.token.connect(counting)
                job.done.connect(done)
                wait_for(job.finished)  # the job's last signal
                generations += 1
            return {
                "tokens": tokens[0],
                "generations": generations,
                "seconds": time.perf_counter() - started,
                "signals": count[0],
            }

        def worst_gap_ms(ticks: list[float]) -> tuple[float, float]:
            gaps = sorted(b - a for a, b in itertools.pairwise(ticks))
            if not gaps:
                return 0.0, 0.0
            return 1000 * gaps[-1] - TICK_MS, 1000 * gaps[int(0.99 * (len(gaps) - 1))] - TICK_MS

        runs = []
        for _ in range(args.stream_runs or (1 if args.tiny else 3)):
            idle_ticks, _ = ticking(idle)
            stream_ticks, info = ticking(stream)
            idle_worst, idle_p99 = worst_gap_ms(idle_ticks)
            worst, p99 = worst_gap_ms(stream_ticks)
            runs.append(
                {
                    **info,
                    "tokens_per_second": info["tokens"] / info["seconds"],
                    "worst_stall_ms": worst,
                    "p99_stall_ms": p99,
                    "ticks": len(stream_ticks),
                    "idle_worst_stall_ms": idle_worst,
                    "idle_p99_stall_ms": idle_p99,
                }
            )
        result.details["streaming"] = {"tick_ms": TICK_MS, "runs": runs}
        worst = max(r["worst_stall_ms"] for r in runs)
        result.target("7", f"worst event-loop stall while streaming ({name})", worst, "<=", 50.0, unit=" ms")
        for pane in panes:
            pane.close()
            pane.deleteLater()
    finally:
        controller.shutdown(5000)
        app.processEvents()
    return result.write(args.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--tiny", action="store_true", help="a tiny model and 1 repetition: checks the code path only"
    )
    p.add_argument("--reps", type=int, default=0, help="time-to-first-token repetitions (default 41)")
    p.add_argument("--stream-tokens", type=int, default=120, help="tokens per streaming run (default 120)")
    p.add_argument("--stream-runs", type=int, default=0, help="streaming runs (default 3)")
    p.add_argument("--idle-ms", type=int, default=1000, help="noise-floor measurement per run (default 1000)")
    p.add_argument(
        "--out", type=Path, default=None, help="result file (default bench/results/gui_latency.json)"
    )
    return p


def main(argv: list[str] | None = None) -> dict:
    data = run(parser().parse_args(argv))
    print(f"gui_latency: load average {data['load_average_start']} -> {data['load_average_end']}")
    common.print_targets(data)
    return data


if __name__ == "__main__":
    main()
