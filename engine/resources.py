"""Where the app's resources (the demo model, the icons) are: in a checkout, or where a wheel put them.

A checkout keeps them in `resources/` beside `engine/`; an installed wheel ships them as data files under
`<prefix>/share/actadd-studio/` (see `[tool.setuptools.data-files]` in pyproject.toml).
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

CHECKOUT_RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DATA_FILES_SUBDIR = Path("share") / "actadd-studio"


def resources_dir() -> Path:
    """The resources folder: the checkout's, else the installed data files' (the checkout's if neither)."""
    if CHECKOUT_RESOURCES.is_dir():
        return CHECKOUT_RESOURCES
    prefixes = [sys.prefix, sys.base_prefix, site.getuserbase()]
    for prefix in prefixes:
        candidate = Path(prefix) / DATA_FILES_SUBDIR
        if candidate.is_dir():
            return candidate
    return CHECKOUT_RESOURCES  # missing everywhere: the callers name this path in their errors
