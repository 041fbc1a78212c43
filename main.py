"""ActAdd Studio entry point.

python main.py                      launch the desktop app with the embedded demo model
python main.py --model PATH         launch the app and load another model (a folder or a .gguf file)
python main.py models fetch smollm2  download a small real model into the cache and print its path
python main.py capture|generate|library|models|norms|serve|sweep ...   headless CLI (python main.py COMMAND --help)
"""

from __future__ import annotations

import sys

from engine.cli import COMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        from engine.cli import main as cli_main

        return cli_main(argv)
    from gui.app import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
