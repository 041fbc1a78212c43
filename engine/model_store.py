"""Find the models already on this machine: the Hugging Face cache, LM Studio, Ollama, GPT4All, `.gguf` files
shipped in installed Python packages, and the models opened recently.

Every root can be overridden by an argument of `list_models` (tests build fake stores in temporary folders)
or an environment variable: `HF_HUB_CACHE`/`HF_HOME` (huggingface_hub's own), `ACTADD_LMSTUDIO_MODELS`,
`OLLAMA_MODELS` (Ollama's own), `ACTADD_GPT4ALL_MODELS` (each a list joined with os.pathsep), and
`ACTADD_CONFIG_DIR` for the recent list. Only headers are read (`engine.model_inspect`); a broken
manifest, an unreadable or truncated file becomes a row that is not openable, with the reason.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from engine import app_dirs
from engine.atomic import atomic_write_text
from engine.model_inspect import HeaderCache, ModelEntry, cache_dir, folder_row

log = logging.getLogger(__name__)

SOURCES = ("hf-cache", "lmstudio", "ollama", "gpt4all", "python-package", "recent")
MAX_RECENT = 20
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
_MAX_DEPTH = 5  # how deep to look under an LM Studio or GPT4All root (publisher/repo/file.gguf)

__all__ = ["SOURCES", "ModelEntry", "list_models", "recent_models_file", "remember_recent"]


def _roots(env: str, defaults: Iterable[Path]) -> list[Path]:
    if value := os.environ.get(env):
        return [Path(p).expanduser() for p in value.split(os.pathsep) if p]
    return list(defaults)


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def default_lmstudio_roots() -> list[Path]:
    return _roots(
        "ACTADD_LMSTUDIO_MODELS",
        [_home() / ".lmstudio" / "models", _home() / ".cache" / "lm-studio" / "models"],
    )


def default_ollama_root() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or _home() / ".ollama" / "models").expanduser()


def default_gpt4all_roots() -> list[Path]:
    home = _home()
    local = Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local"))
    data = Path(os.environ.get("XDG_DATA_HOME", home / ".local" / "share"))
    return _roots(
        "ACTADD_GPT4ALL_MODELS",
        [
            data / "nomic.ai" / "GPT4All",  # Linux
            home / "Library" / "Application Support" / "nomic.ai" / "GPT4All",  # macOS
            local / "nomic.ai" / "GPT4All",  # Windows
        ],
    )


def default_hf_cache() -> Path:
    if env := os.environ.get("HF_HUB_CACHE"):
        return Path(env).expanduser()
    if env := os.environ.get("HF_HOME"):
        return Path(env).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", _home() / ".cache")) / "huggingface" / "hub"


def config_dir() -> Path:
    return app_dirs.config_dir()


def recent_models_file() -> Path:
    return config_dir() / "recent-models.json"


# ---- recent -------------------------------------------------------------------------------------------
def _read_recent(file: Path) -> list[str]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    return [p for p in data if isinstance(p, str) and p] if isinstance(data, list) else []


def remember_recent(path: str | Path, *, file: Path | None = None) -> None:
    """Put a model the user just opened at the top of the recent list (the loader and the GUI call this)."""
    if str(path) == "demo":
        return
    file = file or recent_models_file()
    entry = str(Path(path).expanduser().resolve()) if Path(path).expanduser().exists() else str(path)
    items = [entry, *(p for p in _read_recent(file) if p != entry)][:MAX_RECENT]
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(file, json.dumps(items, ensure_ascii=False, indent=1))
    except OSError as exc:  # a read-only config folder must not stop a model from opening
        log.warning("could not update the recent models list %s: %s", file, exc)


def _recent(file: Path, cache: HeaderCache) -> Iterator[ModelEntry]:
    for text in _read_recent(file):
        path = Path(text)
        if path.is_dir():
            yield folder_row(path, path.name, "recent")
        elif path.is_file():
            yield cache.gguf_row(path, path.name.removesuffix(".gguf"), "recent", path.stat().st_size)
        elif path.is_absolute():
            kind = "gguf" if text.endswith(".gguf") else "folder"
            reason = f"{text} no longer exists"
            yield ModelEntry(
                path.name.removesuffix(".gguf"), "recent", text, kind, None, None, None, 0, False, reason
            )


# ---- stores -------------------------------------------------------------------------------------------
def _walk_gguf(root: Path) -> Iterator[Path]:
    """`.gguf` files under `root`, at most _MAX_DEPTH folders deep, skipping hidden folders."""
    base = len(root.parts)
    for folder, dirs, files in os.walk(root, onerror=lambda exc: None):
        depth = len(Path(folder).parts) - base
        dirs[:] = [] if depth >= _MAX_DEPTH else sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(".gguf") and not name.startswith("."):
                yield Path(folder) / name


def _gguf_tree(roots: Sequence[Path], source: str, cache: HeaderCache) -> Iterator[ModelEntry]:
    for root in roots:
        if not root.is_dir():
            continue
        for file in _walk_gguf(root):
            name = file.relative_to(root).as_posix().removesuffix(".gguf")
            try:
                size = file.stat().st_size
            except OSError as exc:  # a broken link
                reason = f"{file.name} can't be read: {exc.strerror or exc}"
                yield ModelEntry(name, source, str(file), "gguf", None, None, None, 0, False, reason)
                continue
            yield cache.gguf_row(file, name, source, size)


def _ollama_name(parts: tuple[str, ...]) -> str:
    """manifests/HOST/NAMESPACE/MODEL/TAG -> "model:tag" for the default library, else a longer name."""
    host, namespace, model, tag = parts[-4:]
    if host == "registry.ollama.ai":
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def _ollama(root: Path, cache: HeaderCache) -> Iterator[ModelEntry]:
    manifests = root / "manifests"
    if not manifests.is_dir():
        return
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        parts = manifest.relative_to(manifests).parts
        if len(parts) != 4:
            continue
        name = _ollama_name(parts)

        def broken(reason: str, manifest: Path = manifest, name: str = name) -> ModelEntry:
            return ModelEntry(name, "ollama", str(manifest), "gguf", None, None, None, 0, False, reason)

        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            layers = data["layers"]
            digest = next(l["digest"] for l in layers if l.get("mediaType") == OLLAMA_MODEL_LAYER)
        except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
            yield broken(f"the Ollama manifest {manifest} is unreadable or not valid JSON with layers")
            continue
        except StopIteration:
            yield broken(f"the Ollama manifest {manifest} has no model layer ({OLLAMA_MODEL_LAYER})")
            continue
        if not isinstance(digest, str) or ":" not in digest or "/" in digest or "\\" in digest:
            yield broken(f"the Ollama manifest {manifest} has a malformed digest {digest!r}")
            continue
        blob = next(
            (b for b in (root / "blobs" / digest.replace(":", "-"), root / "blobs" / digest) if b.is_file()),
            None,
        )
        if blob is None:
            yield broken(f"the blob {digest} named by {manifest} is missing from {root / 'blobs'}")
            continue
        yield cache.gguf_row(blob, name, "ollama", blob.stat().st_size)


def _hf_cache(root: Path, cache: HeaderCache) -> Iterator[ModelEntry]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(root)
    except (CacheNotFound, OSError, ValueError) as exc:
        if root.exists():
            log.warning("could not scan the Hugging Face cache %s: %s", root, exc)
        return
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)  # the newest snapshot
        folder = Path(revision.snapshot_path)
        ggufs = sorted(
            (f for f in revision.files if f.file_name.lower().endswith(".gguf")),
            key=lambda f: str(f.file_path),
        )
        if (folder / "config.json").is_file() or not ggufs:
            yield folder_row(folder, repo.repo_id, "hf-cache", revision.size_on_disk)
        for file in ggufs:
            relative = Path(file.file_path).relative_to(folder).as_posix().removesuffix(".gguf")
            yield cache.gguf_row(
                Path(file.file_path), f"{repo.repo_id}/{relative}", "hf-cache", file.size_on_disk
            )


def _python_packages(paths: Sequence[str] | None, cache: HeaderCache) -> Iterator[ModelEntry]:
    """`.gguf` files listed in installed distributions' RECORD (read as text: `dist.files` is slow)."""
    import importlib.metadata as md

    dists = md.distributions(path=list(paths)) if paths is not None else md.distributions()
    for dist in dists:
        try:
            record = dist.read_text("RECORD") or ""
        except (OSError, UnicodeDecodeError):
            continue
        if ".gguf" not in record.lower():
            continue
        for line in record.splitlines():
            relative = line.rsplit(",", 2)[0].strip('"')
            if not relative.lower().endswith(".gguf"):
                continue
            file = Path(str(dist.locate_file(relative)))
            if file.is_file():
                name = f"{dist.metadata['Name']}/{Path(relative).name.removesuffix('.gguf')}"
                yield cache.gguf_row(file, name, "python-package", file.stat().st_size)


# ---- all ----------------------------------------------------------------------------------------------
def list_models(
    sources: Iterable[str] = SOURCES,
    *,
    hf_cache: Path | str | None = None,
    lmstudio_roots: Sequence[Path | str] | None = None,
    ollama_root: Path | str | None = None,
    gpt4all_roots: Sequence[Path | str] | None = None,
    package_paths: Sequence[str] | None = None,
    recent_file: Path | str | None = None,
    header_cache: Path | str | bool | None = True,
) -> list[ModelEntry]:
    """Every model found in `sources`, one `ModelEntry` each, without loading any weights.

    `header_cache`: True for the default cache file, False for none, or a file path.
    """
    wanted = list(dict.fromkeys(sources))
    if unknown := [s for s in wanted if s not in SOURCES]:
        from engine.errors import InvalidInputError

        raise InvalidInputError(f"unknown model source {unknown[0]!r}; choose from {', '.join(SOURCES)}")
    cache_file = cache_dir() / "gguf-headers.json" if header_cache is True else header_cache or None
    cache = HeaderCache(Path(cache_file) if cache_file else None)
    finders = {
        "hf-cache": lambda: _hf_cache(Path(hf_cache) if hf_cache else default_hf_cache(), cache),
        "lmstudio": lambda: _gguf_tree(
            [Path(p) for p in lmstudio_roots] if lmstudio_roots is not None else default_lmstudio_roots(),
            "lmstudio",
            cache,
        ),
        "ollama": lambda: _ollama(Path(ollama_root) if ollama_root else default_ollama_root(), cache),
        "gpt4all": lambda: _gguf_tree(
            [Path(p) for p in gpt4all_roots] if gpt4all_roots is not None else default_gpt4all_roots(),
            "gpt4all",
            cache,
        ),
        "python-package": lambda: _python_packages(package_paths, cache),
        "recent": lambda: _recent(Path(recent_file) if recent_file else recent_models_file(), cache),
    }
    rows: list[ModelEntry] = []
    seen: set[str] = set()
    for source in sorted(wanted, key=SOURCES.index):  # stores first; "recent" repeats none of them
        try:
            found = list(finders[source]())
        except OSError as exc:  # a whole store that can't be read is skipped, not fatal
            log.warning("could not list %s models: %s", source, exc)
            continue
        for row in found:
            key = os.path.realpath(row.path)
            if key not in seen:
                seen.add(key)
                rows.append(row)
    cache.save()
    return rows
