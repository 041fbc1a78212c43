"""The tables from transformers that judging a model needs, kept on disk so that listing doesn't import it.

Whether a `.gguf` or a model folder can be opened depends on three tables of transformers: the
architectures it reads from GGUF (`transformers.integrations.ggml.GGUF_CONFIG_MAPPING`), the model types it
knows (`CONFIG_MAPPING`) and those that are causal language models (`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`).
Importing transformers for them takes ~5-10 s on a busy machine, far longer than listing 200 models, so
they are read from transformers once, written (atomically) to `<cache>/transformers-tables.json` with the
version of transformers they came from, and read back from there while that version stays installed. The
version is read from the installed distribution's metadata, which imports nothing. The lists always come
from transformers itself; the file is only a copy, rebuilt when it is missing, damaged or from another version.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
from dataclasses import dataclass

from engine import app_dirs
from engine.atomic import atomic_write_text

log = logging.getLogger(__name__)

CACHE_NAME = "transformers-tables.json"
FORMAT = 1  # bump when the tables kept change
# Keys of GGUF_CONFIG_MAPPING that are sections of the mapping, not architectures.
_NOT_ARCHITECTURES = {"general", "tokenizer"}


@dataclass(frozen=True)
class TransformersTables:
    gguf_architectures: tuple[str, ...]  # sorted: the architectures transformers reads from GGUF
    model_types: frozenset[str]  # every model_type transformers knows (CONFIG_MAPPING)
    causal_lm_types: frozenset[str]  # the model_types with an AutoModelForCausalLM class


def read_from_transformers() -> TransformersTables:
    """The tables, from transformers itself (imports it: seconds)."""
    from transformers import CONFIG_MAPPING
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return TransformersTables(
        gguf_architectures=tuple(sorted(set(GGUF_CONFIG_MAPPING) - _NOT_ARCHITECTURES)),
        model_types=frozenset(CONFIG_MAPPING.keys()),
        causal_lm_types=frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
    )


def transformers_version() -> str | None:
    """The installed transformers' version, from its metadata (no import); None when it can't be read."""
    try:
        return importlib.metadata.version("transformers")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def _string_list(value: object) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _read_cache(version: str) -> TransformersTables | None:
    try:
        data = json.loads((app_dirs.cache_root() / CACHE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("transformers") != version:
        return None
    gguf, types, causal = (_string_list(data.get(k)) for k in ("gguf", "model_types", "causal_lm_types"))
    if gguf is None or types is None or causal is None:
        return None
    return TransformersTables(tuple(gguf), frozenset(types), frozenset(causal))


def _write_cache(version: str, tables: TransformersTables) -> None:
    data = {
        "format": FORMAT,
        "transformers": version,
        "gguf": list(tables.gguf_architectures),
        "model_types": sorted(tables.model_types),
        "causal_lm_types": sorted(tables.causal_lm_types),
    }
    try:
        atomic_write_text(app_dirs.cache_root() / CACHE_NAME, json.dumps(data, indent=0))
    except OSError as exc:  # a read-only cache folder only costs the import next time
        log.debug("could not keep the transformers tables in %s: %s", app_dirs.cache_root(), exc)


@functools.cache
def transformers_tables() -> TransformersTables:
    """The tables: from the cache file when it matches the installed transformers, else from transformers."""
    version = transformers_version()
    if version is not None and (cached := _read_cache(version)) is not None:
        return cached
    tables = read_from_transformers()
    if version is not None:
        _write_cache(version, tables)
    return tables
