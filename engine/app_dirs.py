"""Where the app keeps its per-user files: one rule for the cache and the config folders.

- cache (`$ACTADD_CACHE`, else the platform's cache folder): fetched real models, converted GGUFs, the
  residual-norm measurements, the GGUF header verdicts. Everything in it can be rebuilt.
- config (`$ACTADD_CONFIG_DIR`, else the platform's config folder): the recent-models list.
- fetched models (`$ACTADD_MODELS_DIR`, else `<cache>/models`): tests point the cache at a scratch folder
  and keep this one, so the real models are downloaded once per machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_FOLDER = "actadd-studio"


def cache_root() -> Path:
    if env := os.environ.get("ACTADD_CACHE"):
        return Path(env).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / APP_FOLDER / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP_FOLDER
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / APP_FOLDER


def config_dir() -> Path:
    if env := os.environ.get("ACTADD_CONFIG_DIR"):
        return Path(env).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / APP_FOLDER
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_FOLDER
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / APP_FOLDER


def fetched_models_dir() -> Path:
    if env := os.environ.get("ACTADD_MODELS_DIR"):
        return Path(env).expanduser()
    return cache_root() / "models"
