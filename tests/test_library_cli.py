"""`python main.py library ...`: every subcommand through `engine.cli.main`, its JSON, and its error rule
(one line on stderr, exit code 2); plus one real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import engine
from engine.cli import main
from engine.library import Library

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def love(loaded_models):
    return engine.capture_actadd(loaded_models["gpt2"], "Love", "Hate", [1, 2], tags=["emotion"])


@pytest.fixture
def lib(tmp_path, love) -> Library:
    library = Library(tmp_path / "lib")
    library.save(love, "love", collection="moods")
    library.save(love.to_direction(), "love-dir")
    return library


def run(capsys, *argv, library: Library | None = None) -> tuple[int, str, str]:
    args = list(argv) + (["--library", str(library.root)] if library else [])
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv, library: Library | None = None) -> dict:
    code, out, err = run(capsys, *argv, "--json", library=library)
    assert code == 0, err
    return json.loads(out)


def assert_bad_input(result: tuple[int, str, str], *needles: str) -> None:
    code, _, err = result
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


# ---- list and show -------------------------------------------------------------------------------------
def test_list(capsys, lib, gpt2):
    payload = run_json(capsys, "library", "list", library=lib)
    assert payload["count"] == 2 and payload["library"] == str(lib.root)
    keys = [v["key"] for v in payload["vectors"]]
    assert keys == ["love-dir", "moods/love"]
    first = payload["vectors"][1]
    assert first["layers"] == [1, 2] and first["method"] == "actadd" and first["tags"] == ["emotion"]
    assert first["fingerprint"]["id"] == gpt2.fingerprint.id and first["positional"] is True

    code, out, _ = run(capsys, "library", "list", library=lib)
    assert code == 0 and "moods/love" in out and "love-dir" in out

    assert [
        v["key"] for v in run_json(capsys, "library", "list", "--tag", "emotion", library=lib)["vectors"]
    ] == [
        "love-dir",
        "moods/love",
    ]
    assert run_json(capsys, "library", "list", "--collection", "moods", library=lib)["count"] == 1
    assert run_json(capsys, "library", "list", "--search", "hate", library=lib)["count"] == 2
    assert run_json(capsys, "library", "list", "--search", "nothing-like-this", library=lib)["count"] == 0
    assert run_json(capsys, "library", "list", "--method", "actadd", library=lib)["count"] == 2
    assert (
        run_json(capsys, "library", "list", "--model", gpt2.fingerprint.model_hint, library=lib)["count"] == 2
    )
    assert run_json(capsys, "library", "list", "--model", "no-such-model", library=lib)["count"] == 0
    assert run_json(capsys, "library", "list", "--like", "moods/love", library=lib)["count"] == 2


def test_list_reports_bad_files_on_stderr(capsys, lib):
    (lib.root / "broken.safetensors").write_bytes(b"garbage")
    code, out, err = run(capsys, "library", "list", "--json", library=lib)
    assert code == 0
    payload = json.loads(out)
    assert payload["count"] == 2
    assert [Path(b["path"]).name for b in payload["bad_files"]] == ["broken.safetensors"]
    assert "broken.safetensors" in err and err.startswith("warning: ")
    assert (lib.root / "broken.safetensors").read_bytes() == b"garbage"


def test_list_uses_actadd_library_env(capsys, lib, monkeypatch):
    monkeypatch.setenv("ACTADD_LIBRARY", str(lib.root))
    assert run_json(capsys, "library", "list")["count"] == 2


def test_show(capsys, lib, love, llama):
    info = run_json(capsys, "library", "show", "moods/love", library=lib)
    assert info["prompts"] == {"positive": "Love", "negative": "Hate"}
    assert info["norms"] == {str(l): pytest.approx(n) for l, n in love.norms().items()}
    assert info["provenance"]["pad_token"] == love.provenance["pad_token"]
    assert "compatible_models" in info
    code, out, _ = run(capsys, "library", "show", "moods/love", library=lib)
    assert code == 0 and "norms" in out and "Love" in out
    info = run_json(capsys, "library", "show", "love-dir", "--like", "moods/love", library=lib)
    assert info["compatibility"]["status"] == "ok"


# ---- editing -------------------------------------------------------------------------------------------
def test_rename_tag_notes_duplicate(capsys, lib):
    assert (
        run_json(capsys, "library", "rename", "moods/love", "adoration", library=lib)["key"]
        == "moods/adoration"
    )
    assert_bad_input(
        run(capsys, "library", "rename", "moods/adoration", "/love-dir", library=lib), "already exists"
    )
    assert run_json(capsys, "library", "rename", "moods/adoration", "/love-dir", "--force", library=lib)[
        "key"
    ] == ("love-dir")
    assert run_json(capsys, "library", "tag", "love-dir", "a", "b", library=lib)["tags"] == ["a", "b"]
    assert run_json(capsys, "library", "tag", "love-dir", "--add", "c", "--remove", "a", library=lib)[
        "tags"
    ] == [
        "b",
        "c",
    ]
    assert run_json(capsys, "library", "tag", "love-dir", library=lib)["tags"] == ["b", "c"]
    assert (
        run_json(capsys, "library", "notes", "love-dir", "works at c=5", library=lib)["notes"]
        == "works at c=5"
    )
    assert run_json(capsys, "library", "notes", "love-dir", library=lib)["notes"] == "works at c=5"
    path = run_json(capsys, "library", "duplicate", "love-dir", "copy", library=lib)["path"]
    assert Path(path) == lib.root / "copy.safetensors"
    assert sorted(lib.list().keys()) == ["copy", "love-dir"]


def test_rm_trash_restore(capsys, lib):
    payload = run_json(capsys, "library", "rm", "moods/love", "love-dir", library=lib)
    ids = {t["key"]: t["trash_id"] for t in payload["trashed"]}
    assert lib.list().keys() == []
    trash = run_json(capsys, "library", "trash", library=lib)["trash"]
    assert {t["trash_id"] for t in trash} == set(ids.values())
    code, out, _ = run(capsys, "library", "trash", library=lib)
    assert code == 0 and ids["moods/love"] in out
    assert run_json(capsys, "library", "restore", ids["moods/love"], library=lib)["key"] == "moods/love"
    lib.save(lib.load("moods/love"), "love-dir")
    assert_bad_input(run(capsys, "library", "restore", ids["love-dir"], library=lib), "new name")
    assert (
        run_json(capsys, "library", "restore", ids["love-dir"], "--name", "back", library=lib)["key"]
        == "back"
    )
    assert sorted(lib.list().keys()) == ["back", "love-dir", "moods/love"]
    # a typo deletes nothing
    assert_bad_input(run(capsys, "library", "rm", "back", "no-such", library=lib), "no-such")
    assert "back" in lib.list().keys()  # noqa: SIM118 - Listing.keys() is a list
    run_json(capsys, "library", "rm", "back", library=lib)
    assert run_json(capsys, "library", "trash", "--empty", library=lib)["emptied"] == 1
    assert lib.trash() == []


def test_combine_and_to_direction(capsys, lib, love):
    lib.save(love, "again")
    payload = run_json(
        capsys, "library", "combine", "moods/love:2", "again:-0.5", "--name", "/mix", library=lib
    )
    mix = lib.load("mix")
    torch.testing.assert_close(mix.layers[1], 1.5 * love.layers[1])
    assert payload["terms"] == [{"coeff": 2.0, "key": "moods/love"}, {"coeff": -0.5, "key": "again"}]
    run_json(capsys, "library", "combine", "0.5*again", "--name", "half", library=lib)
    torch.testing.assert_close(lib.load("half").layers[2], 0.5 * love.layers[2])
    assert_bad_input(
        run(capsys, "library", "combine", "again:x", "--name", "bad", library=lib), "coefficient"
    )
    assert_bad_input(run(capsys, "library", "combine", "again:nan", "--name", "bad", library=lib), "finite")
    assert_bad_input(
        run(capsys, "library", "combine", "again", "love-dir", "--name", "bad", library=lib), "differ"
    )

    payload = run_json(
        capsys, "library", "to-direction", "again", "again-dir", "--position", "-1", library=lib
    )
    assert payload["how"] == "position -1"
    assert torch.equal(lib.load("again-dir").layers[1], love.layers[1][-1])
    assert_bad_input(run(capsys, "library", "to-direction", "love-dir", "x", library=lib), "already")


# ---- export and import -----------------------------------------------------------------------------------
def test_export_import_gguf(capsys, lib, love, tmp_path):
    out = tmp_path / "love.gguf"
    assert_bad_input(run(capsys, "library", "export", "moods/love", str(out), library=lib), "position-wise")
    assert_bad_input(
        run(capsys, "library", "export", "moods/love", str(out), "--direction", "mean", library=lib),
        "direction.0",
    )
    code, stdout, err = run(
        capsys,
        "library",
        "export",
        "moods/love",
        str(out),
        "--direction",
        "mean",
        "--skip-invalid-layers",
        "--json",
        library=lib,
    )
    assert code == 0 and "warning: " in err
    assert json.loads(stdout)["path"] == str(out)
    assert [t.name for t in gguf.GGUFReader(out).tensors] == ["direction.1"]
    assert_bad_input(
        run(capsys, "library", "export", "moods/love", str(out), library=lib), "already exists", "(--force)"
    )

    payload = run_json(
        capsys, "library", "import", str(out), "--name", "from-gguf", "--like", "moods/love", library=lib
    )
    assert payload["imported"][0]["key"] == "from-gguf"
    back = lib.load("from-gguf")
    torch.testing.assert_close(back.layers[2], love.to_direction().layers[2])


def test_export_import_bundle(capsys, lib, tmp_path):
    out = tmp_path / "moods.zip"
    payload = run_json(capsys, "library", "export", str(out), "--collection", "moods", library=lib)
    assert payload["keys"] == ["moods/love"]
    everything = tmp_path / "all.zip"
    assert sorted(run_json(capsys, "library", "export", str(everything), "--all", library=lib)["keys"]) == [
        "love-dir",
        "moods/love",
    ]
    other = Library(tmp_path / "other")
    payload = run_json(capsys, "library", "import", str(everything), library=other)
    assert sorted(i["key"] for i in payload["imported"]) == ["love-dir", "moods/love"]
    assert_bad_input(run(capsys, "library", "import", str(everything), library=other), "nothing imported")
    run_json(capsys, "library", "import", str(everything), "--force", library=other)
    run_json(capsys, "library", "import", str(out), "--collection", "copies", library=other)
    assert "copies/love" in other.list().keys()  # noqa: SIM118 - Listing.keys() is a list
    assert_bad_input(
        run(capsys, "library", "export", "moods/love", "love-dir", str(tmp_path / "two.gguf"), library=lib),
        ".zip",
    )
    assert_bad_input(
        run(capsys, "library", "export", str(tmp_path / "x.zip"), library=lib), "nothing to export"
    )
    assert_bad_input(
        run(capsys, "library", "export", str(tmp_path / "x.zip"), "--collection", "nope", library=lib), "nope"
    )


def test_import_repeng_and_refusals(capsys, lib, tmp_path):
    np.savez(tmp_path / "happy.npz", **{"1": np.ones(64, np.float32)})
    payload = run_json(
        capsys, "library", "import", str(tmp_path / "happy.npz"), "--collection", "r", library=lib
    )
    assert payload["imported"][0]["key"] == "r/happy" and lib.load("r/happy").layer_ids == [2]
    np.save(tmp_path / "evil.npy", {"x": 1}, allow_pickle=True)
    assert_bad_input(run(capsys, "library", "import", str(tmp_path / "evil.npy"), library=lib), "pickle")
    assert_bad_input(
        run(capsys, "library", "import", str(tmp_path / "missing.gguf"), library=lib), "does not exist"
    )
    (tmp_path / "evil.zip").write_bytes(b"not a zip")
    assert_bad_input(run(capsys, "library", "import", str(tmp_path / "evil.zip"), library=lib), "evil.zip")


# ---- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["library", "show", "missing"],
        ["library", "rename", "missing", "x"],
        ["library", "rename", "love-dir", "../escape"],
        ["library", "rename", "love-dir", "a\x01b"],
        ["library", "tag", "missing", "x"],
        ["library", "notes", "missing", "x"],
        ["library", "duplicate", "love-dir", "love-dir"],
        ["library", "duplicate", "love-dir", "bad/name/here"],
        ["library", "rm", "missing"],
        ["library", "restore", "not-a-trash-id"],
        ["library", "combine", "missing:1", "--name", "x"],
        ["library", "to-direction", "missing", "x"],
        ["library", "export", "missing", "out.zip"],
        ["library", "import", "nowhere.npz"],
        ["library", "show"],
        ["library", "frobnicate"],
        ["library", "list", "--method", "magic"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, lib, argv):
    assert_bad_input(run(capsys, *argv, library=lib))


def test_help_exits_0(capsys):
    assert main(["library", "--help"]) == 0
    assert "export" in capsys.readouterr().out
    assert main(["library", "export", "--help"]) == 0


def test_real_subprocess_list_json(lib, tmp_path):
    env = {**os.environ, "ACTADD_LIBRARY": str(tmp_path / "unused")}
    result = subprocess.run(
        [sys.executable, "main.py", "library", "list", "--json", "--library", str(lib.root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert sorted(v["key"] for v in payload["vectors"]) == ["love-dir", "moods/love"]
    bad = subprocess.run(
        [sys.executable, "main.py", "library", "show", "nope", "--library", str(lib.root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stdout == ""
