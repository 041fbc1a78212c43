"""The application's start: the command line, the start-up model, QApplication (`python main.py`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from engine import __version__
from engine.cli import COMMANDS
from engine.log_filters import install_log_filters


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="actadd-studio",
        description="ActAdd Studio desktop app",
        epilog=f"headless commands (python main.py COMMAND --help for each):\n  {', '.join(COMMANDS)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="model folder, .gguf file or cached hub id to load (default: the demo model)",
    )
    parser.add_argument(
        "--library", metavar="DIR", help="vector library folder (default: $ACTADD_LIBRARY or app data)"
    )
    parser.add_argument("--no-autoload", action="store_true", help="start without loading a model")
    args, _qt_args = parser.parse_known_args(argv)
    return args


def startup_model(args: argparse.Namespace, settings: QSettings) -> str | None:
    """What to load at start: --model, else the last model used (the workspace comes back, with its
    quantization, device and dtype from the Model tab's settings), else the demo model. A last model that
    fails to load falls back to the demo (MainWindow._autoload)."""
    if args.no_autoload:
        return None
    if args.model:
        return args.model
    last = str(settings.value("model/last", "") or "")
    return last or "demo"  # "demo" reports clearly when it is missing


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # The window (and through it torch and transformers) only now: `python main.py --help` needs none of it.
    from gui.controller import wait_for_orphans
    from gui.main_window import APP_NAME, MainWindow, app_icon
    from gui.qt_platform import warn_if_xcb_broken

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install_log_filters()
    if QApplication.instance() is None:  # Qt aborts the process if its platform plugin fails: explain first
        warn_if_xcb_broken(argv, os.environ)
    app = QApplication.instance() or QApplication(
        [sys.argv[0], *[a for a in argv if a.startswith("-platform")]]
    )
    app.setOrganizationName(APP_NAME)
    app.setApplicationName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setWindowIcon(app_icon())
    settings = QSettings()
    window = MainWindow(settings=settings, library_root=args.library, autoload=startup_model(args, settings))
    window.show()
    code = app.exec()
    wait_for_orphans()
    return code
