#!/usr/bin/env python3
"""Take the README's screenshots from the running app, offscreen: docs/screenshots/<panel>.png.

Launches the real main window with the demo model (or, when it is missing, a tiny random-init model built
on the spot: the pictures then show gibberish text), drives every panel the way a user would (load,
capture, generate side by side with the effect shown, a library with a few vectors, a layer sweep) and
saves each tab with `QWidget.grab()`.

    python scripts/take_screenshots.py [--out docs/screenshots] [--model PATH]
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--model", help="a model folder instead of the demo model")
    args = parser.parse_args(argv)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    from gui.app import MainWindow, app_icon

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

    # ---- Capture: a topic vector (the demo model's wedding cue) and a sentiment vector -------------------
    depth = ctx.model.info.n_layers
    capture = window.capture_panel
    vectors = [
        # layer 0 is where the demo model steers both topic and mood (docs/replication.md)
        ("weddings", " weddings", " ", 0, "topic, demo", "The paper's topic steering: a one-token cue."),
        ("love-hate", "Love", "Hate", 0, "sentiment, demo", "Positive vs negative mood."),
        ("anger-calm", "Anger", "Calm", min(1, depth - 1), "sentiment", ""),
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
    row = generate.add_vector(ctx.entry("weddings"))
    row.set_coefficient(2.0)
    # (the paper's "I went up to my friend and said" is a bad demo here: the demo model's corpus ends
    # "said" with "his vows", so even the unsteered pane talks about weddings)
    generate.prompt.setPlainText("Yesterday we went to the market")
    generate.apply_paper_defaults()
    generate.max_tokens.setValue(60)
    generate.seed.setValue(3)
    generate.effect.setChecked(True)
    generate.generate()
    wait_until(app, lambda: generate.transcript is not None and idle(), what="the generation")
    shoot(generate, "generate")

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
    if not sweep.set_vector("weddings"):
        raise SystemExit("the sweep panel does not offer the weddings vector")
    sweep.coeff_from.setValue(0)
    sweep.coeff_to.setValue(8)
    sweep.coeff_count.setValue(5)
    sweep.sweep_layers.setChecked(True)
    sweep.layer_from.setValue(0)
    sweep.layer_to.setValue(depth - 1)
    sweep.metric.setCurrentText("target-words")
    sweep.targets.setText("wedding, weddings, bride, groom, ceremony, vows, bouquet, veil, chapel, honeymoon")
    sweep.targets.setCursorPosition(0)
    if is_demo:  # held-out prompts of the demo model, none of which leads to weddings by itself
        sweep.prompts.setPlainText("Here is what I think about it:\nLet me tell you something.\nYesterday,")
    sweep.samples.setValue(3 if is_demo else 1)
    sweep.max_tokens.setValue(24)
    sweep.run()
    wait_until(app, lambda: not sweep.is_running() and idle(), timeout=900, what="the sweep")
    if sweep.result is None:
        raise SystemExit(f"the sweep failed: {window.errors}")
    shoot(sweep, "sweep")
    return 0


if __name__ == "__main__":
    sys.exit(main())
