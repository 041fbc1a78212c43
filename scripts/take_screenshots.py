#!/usr/bin/env python3
"""Take the README's screenshots from the running app, offscreen: docs/screenshots/<panel>.png.

Launches the real main window with --model (the README's pictures: SmolLM2-135M-Instruct's .gguf file,
converted once into the cache), else the demo model, else a tiny random-init model built on the spot
(the pictures then show gibberish text). Drives every panel the way a user would (load, capture, generate
side by side with the per-token effect shown, chat, serve one steered request, a library with a few
vectors, a small layer sweep) and saves each tab with `QWidget.grab()`.

    python scripts/take_screenshots.py --model /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SIZE = (1280, 820)
# What the Generate and Chat tabs show on a real model (SmolLM2-135M-Instruct): picked with
# `python main.py generate --steer love-hate:0.5n --mode all --compare --chat
# --seed 2 --temperature 0.7 --top-p 0.9 --max-new-tokens 40` so that the steered answer
# is clearly warmer than the unsteered one and still fluent.
GENERATE_PROMPT = "What do you think of my neighbour?"
GENERATE_STRENGTH = 0.5
GENERATE_SEED = 2


def _sampling():
    from engine.generation import SamplingConfig

    return SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=40, seed=GENERATE_SEED)


CHAT_MESSAGES = ["What do you think of my neighbour?"]


def wait_until(app, condition, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or condition}")
        app.processEvents()
        time.sleep(0.01)


def settle(app, seconds: float = 0.3) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def pick_model(explicit: str | None) -> tuple[str, bool]:
    """(source, is_demo): --model, else the demo model, else a tiny random model built in a temp folder."""
    from engine.models import DEMO_MODEL_DIR

    if explicit:
        return explicit, False
    if (DEMO_MODEL_DIR / "config.json").exists():
        return "demo", True
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_tiny_model

    folder = Path(tempfile.mkdtemp(prefix="actadd-shots-")) / "tiny-gpt2"
    print("the demo model is missing; using a tiny random model (the text will be gibberish)")
    return str(build_tiny_model("gpt2", folder)), False


def main(argv: list[str] | None = None) -> int:
    global GENERATE_STRENGTH, GENERATE_SEED  # the picture's settings, read by drive()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--model", help="a model folder or .gguf file instead of the demo model")
    parser.add_argument(
        "--strength",
        type=float,
        default=GENERATE_STRENGTH,
        help="Generate's normalised strength (real models)",
    )
    parser.add_argument("--seed", type=int, default=GENERATE_SEED, help="Generate's and Chat's seed")
    args = parser.parse_args(argv)
    GENERATE_STRENGTH, GENERATE_SEED = args.strength, args.seed

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    from gui.main_window import MainWindow, app_icon

    app.setWindowIcon(app_icon())
    source, is_demo = pick_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="actadd-shots-"))
    settings = QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, library_root=work / "library", autoload=None)
    window.resize(*SIZE)
    window.show()
    try:
        return drive(app, window, source, is_demo, args.out)
    finally:
        window.close()  # stops the worker thread cleanly, whatever happened


def drive(app, window, source: str, is_demo: bool, out: Path) -> int:
    ctx = window.context
    controller = ctx.controller
    idle = lambda: not controller.busy  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)

    def shoot(panel, name: str) -> None:
        window.tabs.setCurrentWidget(panel)
        settle(app, 0.5)
        path = out / f"{name}.png"
        window.grab().save(str(path))
        print("wrote", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)

    # ---- Model -------------------------------------------------------------------------------------------
    window.model_panel.set_device("cpu")
    window.model_panel.load_source(source)
    wait_until(app, lambda: ctx.model is not None or window.errors, what="the model")
    if ctx.model is None:
        raise SystemExit(f"could not load {source}: {window.errors}")
    wait_until(app, idle)
    controller.request_memory()
    settle(app, 0.5)
    shoot(window.model_panel, "model")

    # ---- Capture: a sentiment vector, a topic vector and the paper's padded pair ---------------------------
    depth = ctx.model.info.n_layers
    real = not is_demo and depth > 4
    # Layers where each model responds (docs/replication.md): layer 0 on the demo model; on SmolLM2 (30
    # layers) Love-Hate steers from layer 6 and the topic cue sits a little deeper.
    mood_layer = min(6, depth - 1) if real else 0
    topic_layer = min(8, depth - 1) if real else 0
    capture = window.capture_panel
    vectors = [
        ("love-hate", "Love", "Hate", mood_layer, "sentiment", "Positive vs negative mood."),
        ("weddings", " weddings", " ", topic_layer, "topic", "The paper's topic steering: a one-token cue."),
        ("anger-calm", "Anger", "Calm", mood_layer, "sentiment", ""),
    ]
    for name, positive, negative, layer, tags, notes in vectors:
        capture.set_method("actadd")
        capture.positive.setText(positive)
        capture.negative.setText(negative)
        capture.set_layers(layer)
        capture.name.setText(name)
        capture.tags.setText(tags)
        capture.notes.setPlainText(notes)
        capture.capture()
        wait_until(app, lambda name=name: ctx.entry(name) is not None, what=f"capture {name}")
        wait_until(app, idle)
    # Show the pair whose space padding is visible.
    capture.positive.setText("I talk about weddings constantly")
    capture.negative.setText("I do not talk about weddings constantly")
    capture.set_layers(topic_layer)
    capture.name.setText("weddings-talk")
    capture.tags.setText("topic")
    capture.notes.setPlainText("The paper's example pair; the shorter prompt is padded with spaces.")
    capture.capture()
    wait_until(app, lambda: ctx.entry("weddings-talk") is not None, what="capture weddings-talk")
    wait_until(app, idle)
    capture.update_preview()
    shoot(capture, "capture")

    # ---- Generate: side by side, with the effect shown ---------------------------------------------------
    generate = window.generate_panel
    if real:
        # SmolLM2 barely responds to one-token front injection; Love-Hate in mode `all` at a normalised
        # strength of about half the typical residual norm turns the answer's mood and stays fluent.
        row = generate.add_vector(ctx.entry("love-hate"))
        wait_until(app, lambda: row.scale() is not None, what="the strength scale")
        row.mode.setCurrentText("all")
        row.set_strength(GENERATE_STRENGTH)
        generate.chat.setChecked(generate.chat.isEnabled())
        generate.prompt.setPlainText(GENERATE_PROMPT)
        # The CLI's sampling, so `python main.py generate ... --seed 2 --temperature 0.7 --top-p 0.9`
        # writes the same two texts.
        generate.set_sampling(_sampling())
    else:
        row = generate.add_vector(ctx.entry("weddings"))
        row.set_coefficient(2.0)
        # (the paper's "I went up to my friend and said" is a bad demo here: the demo model's corpus ends
        # "said" with "his vows", so even the unsteered pane talks about weddings)
        generate.apply_paper_defaults()
        generate.prompt.setPlainText("Yesterday we went to the market")
        generate.max_tokens.setValue(60)
        generate.seed.setValue(3)
    generate.random_seed.setChecked(False)
    generate.effect.setChecked(True)
    generate.generate()
    wait_until(app, lambda: generate.transcript is not None and idle(), timeout=600, what="the generation")
    shoot(generate, "generate")

    # ---- Chat: the same vector steers every assistant turn ------------------------------------------------
    chat = window.chat_panel
    if chat.has_template():
        window.tabs.setCurrentWidget(chat)
        settle(app, 0.3)
        chat.system.setPlainText("You are a helpful assistant.")
        chat.sampling_form.set_sampling(_sampling())
        chat.sampling_form.random_seed.setChecked(False)
        for message in CHAT_MESSAGES:
            chat.message.setPlainText(message)
            chat.send()
            wait_until(app, lambda: not chat.is_generating() and idle(), timeout=600, what="the chat answer")
        chat.update_steering_note()
        shoot(chat, "chat")
    else:
        print("the model has no chat template: no chat.png")

    # ---- Serve: the loaded model as an OpenAI-compatible endpoint, one steered request logged ----------------
    serve = window.serve_panel
    window.tabs.setCurrentWidget(serve)
    serve.port.setValue(free_port())
    serve.serve_button.click()
    wait_until(app, lambda: serve.state in ("serving", "off"), timeout=60, what="the server")
    if serve.state != "serving":
        raise SystemExit(f"could not serve: {serve.status.text()}")
    post_in_background(app, serve, row.effective_coefficient(), mood_layer)
    shoot(serve, "serve")
    serve.stop()
    wait_until(app, lambda: serve.state == "off", timeout=30, what="the server to stop")

    # ---- Library --------------------------------------------------------------------------------------
    # A vector from a model of another width: listed, greyed out, with the reason.
    import torch

    from engine.fingerprint import ModelFingerprint
    from engine.vector import SteeringVector

    other = ModelFingerprint("llama", 64, 3, "0" * 16, "tiny-llama")
    ctx.library.save(
        SteeringVector(
            {1: torch.randn(64)}, method="pca", default_mode="all", fingerprint=other, tags=("imported",)
        ),
        "formal-tone",
    )
    ctx.refresh_library()
    wait_until(app, lambda: ctx.entry("formal-tone") is not None, what="the library listing")
    window.library_panel.select("love-hate")
    settle(app, 0.5)
    shoot(window.library_panel, "library")

    # ---- Sweep: which layer, how strong? --------------------------------------------------------------
    sweep = window.sweep_panel
    if real:
        # Small on purpose (a few minutes on 2 CPU cores): the share of sampled chat-free continuations
        # with a warm word, Love-Hate in mode `all`, 5 layers x 3 strengths x 2 prompts x 2 samples.
        if not sweep.set_vector("love-hate"):
            raise SystemExit("the sweep panel does not offer the love-hate vector")
        scale = row.scale()
        per_unit = scale.per_unit if scale is not None else 0.1
        sweep.coeff_from.setValue(0)
        sweep.coeff_to.setValue(round(0.8 * per_unit, 3))  # up to a normalised strength of 0.8 at layer 6
        sweep.coeff_count.setValue(3)
        sweep.sweep_layers.setChecked(True)
        sweep.layer_from.setValue(4)
        sweep.layer_to.setValue(8)
        sweep._mode.setCurrentText("all")
        sweep.metric.setCurrentText("target-words")
        sweep.targets.setText("love, loved, happy, wonderful, great, beautiful, kind, joy, proud")
        sweep.prompts.setPlainText("I think my neighbour is\nToday I feel")
        sweep.samples.setValue(2)
        sweep.max_tokens.setValue(16)
    else:
        if not sweep.set_vector("weddings"):
            raise SystemExit("the sweep panel does not offer the weddings vector")
        sweep.coeff_from.setValue(0)
        sweep.coeff_to.setValue(8)
        sweep.coeff_count.setValue(5)
        sweep.sweep_layers.setChecked(True)
        sweep.layer_from.setValue(0)
        sweep.layer_to.setValue(depth - 1)
        sweep.metric.setCurrentText("target-words")
        sweep.targets.setText(
            "wedding, weddings, bride, groom, ceremony, vows, bouquet, veil, chapel, honeymoon"
        )
        if is_demo:  # held-out prompts of the demo model, none of which leads to weddings by itself
            sweep.prompts.setPlainText(
                "Here is what I think about it:\nLet me tell you something.\nYesterday,"
            )
        sweep.samples.setValue(3 if is_demo else 1)
        sweep.max_tokens.setValue(24)
    sweep.targets.setCursorPosition(0)
    sweep.run()
    wait_until(app, lambda: not sweep.is_running() and idle(), timeout=900, what="the sweep")
    if sweep.result is None:
        raise SystemExit(f"the sweep failed: {window.errors}")
    if real:  # show the samples of Generate's layer at the strongest coefficient
        from gui.panels.sweep import linspace

        coeffs = linspace(sweep.coeff_from.value(), sweep.coeff_to.value(), sweep.coeff_count.value())
        sweep.cell_table.select(mood_layer, coeffs[-1])
    shoot(sweep, "sweep")
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post_in_background(app, serve, coeff: float, layer: int) -> None:
    """One steered chat completion, sent from a thread while the GUI keeps serving its event loop."""
    import threading

    import httpx

    model = serve.model_name.text()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": CHAT_MESSAGES[0]}],
        "max_tokens": 24,
        "seed": GENERATE_SEED,
        "steering": [{"vector": "love-hate", "coeff": round(coeff, 4), "layer": layer, "mode": "all"}],
    }
    replies: list[object] = []
    threading.Thread(
        target=lambda: replies.append(httpx.post(serve.url + "/chat/completions", json=body, timeout=600)),
        daemon=True,
    ).start()
    wait_until(
        app, lambda: bool(replies) and len(serve.log_rows()) >= 1, timeout=600, what="the served request"
    )
    settle(app, 0.5)


if __name__ == "__main__":
    sys.exit(main())
