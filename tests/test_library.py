"""The vector library: listing from headers, the index, bad files, every operation, the trash,
compatibility, and the never-lose-data guarantees (kill -9 mid-save, concurrent processes)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from fork_server import Zygote
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
import engine.library as library_module
import engine.library.entries as entries_module
from engine.errors import IncompatibleVectorError, LibraryError, VectorFileError
from engine.fingerprint import ModelFingerprint
from engine.library import (
    INDEX_NAME,
    BadFile,
    Compatibility,
    Library,
    Listing,
    VectorEntry,
    check_name,
    default_library_dir,
)
from engine.vector import SteeringVector, load_vector, save_vector

TESTS = Path(__file__).resolve().parent
WRITER = TESTS / "library_writer.py"


# ---- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def love(loaded_models) -> SteeringVector:
    """A real ActAdd vector from the tiny GPT-2, at layers 1 and 2 (shape [n, 64])."""
    return engine.capture_actadd(loaded_models["gpt2"], "Love", "Hate", [1, 2], tags=["emotion"], notes="n1")


@pytest.fixture(scope="module")
def anger(loaded_models) -> SteeringVector:
    return engine.capture_actadd(loaded_models["gpt2"], "Anger", "Calm", [1, 2])


@pytest.fixture(scope="module")
def llama_love(loaded_models) -> SteeringVector:
    return engine.capture_actadd(loaded_models["llama"], "Love", "Hate", [1, 2])


@pytest.fixture
def lib(tmp_path) -> Library:
    return Library(tmp_path / "library")


def synthetic(hidden: int = 8, layers=(1,), rows: int | None = 3, value: float | None = None, **kw):
    shape = (rows, hidden) if rows else (hidden,)
    make = (lambda: torch.full(shape, float(value))) if value is not None else (lambda: torch.randn(shape))
    return SteeringVector(layers={l: make() for l in layers}, **kw)


def same_layers(a: SteeringVector, b: SteeringVector) -> bool:
    return a.layer_ids == b.layer_ids and all(torch.equal(a.layers[l], b.layers[l]) for l in a.layer_ids)


# ---- API shape -------------------------------------------------------------------------------------------
def test_contract_names_exist():
    assert {c.value for c in Compatibility} == {"ok", "other-model", "incompatible"}
    names = "list show save load resolve rename set_tags set_notes duplicate delete trash restore combine"
    for name in [*names.split(" "), "to_direction", "compatibility", "compatible"]:
        assert callable(getattr(Library, name)), name
    assert {"entries", "bad_files"} <= set(Listing.__dataclass_fields__)
    assert {"path", "reason"} <= set(BadFile.__dataclass_fields__)


def test_default_library_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTADD_LIBRARY", str(tmp_path / "mine"))
    assert default_library_dir() == tmp_path / "mine"
    assert Library().root == tmp_path / "mine"
    monkeypatch.delenv("ACTADD_LIBRARY")
    assert default_library_dir().parts[-3:] == ("ActAdd Studio", "ActAdd Studio", "vectors")


def test_empty_or_missing_library_lists_nothing(tmp_path):
    listing = Library(tmp_path / "does-not-exist").list()
    assert listing.entries == [] and listing.bad_files == []


# ---- save, list, load ------------------------------------------------------------------------------------
def test_save_list_load_keeps_provenance(lib, love, gpt2):
    path = lib.save(love, "love-hate", collection="emotions")
    assert path == lib.root / "emotions" / "love-hate.safetensors"
    (entry,) = lib.list().entries
    assert isinstance(entry, VectorEntry)
    assert entry.key == "emotions/love-hate" and entry.name == "love-hate" and entry.collection == "emotions"
    assert entry.path == path and entry.method == "actadd"
    assert entry.layers == [1, 2] and entry.shape == love.shape and entry.hidden_size == 64
    assert entry.fingerprint == gpt2.fingerprint
    assert entry.prompts == {"positive": "Love", "negative": "Hate"}
    assert entry.tags == ("emotion",) and entry.notes == "n1"
    assert entry.default_mode == "front" and entry.default_coeff == love.default_coeff
    assert entry.created == love.created

    loaded = lib.load("emotions/love-hate")
    assert same_layers(loaded, love)
    # what capture recorded survives: pad token, dtype, quantization, library version, the layers
    for key in ("pad_token", "pad_token_id", "dtype", "quantize", "library_version", "layers"):
        assert loaded.provenance[key] == love.provenance[key], key
    assert loaded.fingerprint == gpt2.fingerprint
    assert lib.load(str(path)).name == "love-hate"


def test_listing_never_reads_tensors(lib, love, monkeypatch):
    for i in range(3):
        lib.save(love, f"v{i}")

    def forbidden(*args, **kwargs):
        raise AssertionError("listing must not load tensors")

    monkeypatch.setattr(library_module, "load_vector", forbidden)
    monkeypatch.setattr("engine.vector_file.load_safetensors_bytes", forbidden)
    assert lib.list().keys() == ["v0", "v1", "v2"]


def test_index_is_used_and_refreshed(lib, love, monkeypatch):
    for i in range(4):
        lib.save(love, f"v{i}")
    assert lib.list().keys() == ["v0", "v1", "v2", "v3"]
    index = json.loads((lib.root / INDEX_NAME).read_text())
    assert set(index["files"]) == {f"v{i}.safetensors" for i in range(4)}

    calls = []
    real = entries_module.read_header
    monkeypatch.setattr(entries_module, "read_header", lambda p: calls.append(Path(p).name) or real(p))
    assert Library(lib.root).list().keys() == ["v0", "v1", "v2", "v3"]
    assert calls == []  # warm, in another Library object (another process): headers come from the index

    # the same object doesn't even read the index again while it is unchanged
    real_index = Library._read_index
    monkeypatch.setattr(Library, "_read_index", lambda self: pytest.fail("index re-read"))
    assert lib.list().keys() == ["v0", "v1", "v2", "v3"]
    monkeypatch.setattr(Library, "_read_index", real_index)

    lib.set_tags("v1", ["changed"])
    lib.save(love, "v4")
    (lib.root / "v0.safetensors").unlink()
    calls.clear()
    listing = lib.list()
    assert sorted(calls) == ["v1.safetensors", "v4.safetensors"]
    assert listing.keys() == ["v1", "v2", "v3", "v4"]
    assert next(e for e in listing if e.name == "v1").tags == ("changed",)
    assert "v0.safetensors" not in json.loads((lib.root / INDEX_NAME).read_text())["files"]


def test_rewrite_with_same_size_and_mtime_is_noticed(lib):
    path = lib.save(synthetic(tags=("aaaa",)), "v")
    stat = path.stat()
    assert lib.list().entries[0].tags == ("aaaa",)
    lib.set_tags("v", ["bbbb"])  # same header length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert lib.list().entries[0].tags == ("bbbb",)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"{not json",
        b"[" * 100_000,
        b'{"version": 3, "files": []}',
        b'{"version": 3, "files": {"v.safetensors": 3}, "fingerprints": 7}',
        b'{"version": 3, "files": {"v.safetensors": [[1, 2, 3, 4], [1]]}, "fingerprints": {}}',
        b'{"version": 1, "files": {"v.safetensors": {}}}',
    ],
)
def test_corrupt_index_is_rebuilt(lib, love, garbage):
    lib.save(love, "v")
    lib.list()
    (lib.root / INDEX_NAME).write_bytes(garbage)
    assert lib.list().keys() == ["v"]
    assert "v.safetensors" in json.loads((lib.root / INDEX_NAME).read_text())["files"]


def test_index_records_are_checked(lib, love):
    lib.save(love, "v")
    lib.list()
    index = json.loads((lib.root / INDEX_NAME).read_text())
    stat, values = index["files"]["v.safetensors"]
    # a record whose stat doesn't match the file is stale: re-read from the header
    index["files"]["v.safetensors"] = [[stat[0] + 1, *stat[1:]], [*values[:1], [9], *values[2:]]]
    (lib.root / INDEX_NAME).write_text(json.dumps(index))
    assert Library(lib.root).list().entries[0].layers == [1, 2]
    # a malformed record with the right stat is re-read too
    for broken in ([stat, values[:-1]], [stat, 42], [stat], [stat, [*values[:1], "x", *values[2:]]]):
        index["files"]["v.safetensors"] = broken
        (lib.root / INDEX_NAME).write_text(json.dumps(index))
        assert Library(lib.root).list().entries[0].layers == [1, 2], broken
    # and a record saying "bad" for a file that changed is not believed
    index["files"]["v.safetensors"] = [[0, 0, 0, 0], "corrupt"]
    (lib.root / INDEX_NAME).write_text(json.dumps(index))
    assert Library(lib.root).list().bad_files == []


def test_bad_files_are_reported_skipped_and_never_touched(lib, love, tmp_path):
    lib.save(love, "good")
    lib.save(love, "other", collection="c")
    valid = (lib.root / "good.safetensors").read_bytes()
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"model.embed.weight": torch.zeros(2, 2)}, foreign)
    bad = {
        "garbage.safetensors": b"\x00garbage\xff" * 10,
        "empty.safetensors": b"",
        "truncated.safetensors": valid[: len(valid) // 2],
        "c/half-header.safetensors": valid[:40],
        "foreign.safetensors": foreign.read_bytes(),
        "notes.txt": b"my notes",
        "wrong-dtype.safetensors": b"",
    }
    from safetensors.torch import save

    bad["wrong-dtype.safetensors"] = save({"layers.1": torch.zeros(3, dtype=torch.float64)})
    for rel, data in bad.items():
        (lib.root / rel).write_bytes(data)
    before = {rel: (lib.root / rel).read_bytes() for rel in bad}

    for _ in range(2):  # cold, then from the index
        listing = lib.list()
        assert listing.keys() == ["good", "c/other"]
        reported = {b.path.relative_to(lib.root).as_posix(): b.reason for b in listing.bad_files}
        assert set(reported) == set(bad)
        for rel, reason in reported.items():
            assert reason, rel
        assert "float32" in reported["wrong-dtype.safetensors"]
        assert "layers.N" in reported["foreign.safetensors"]

    # operations on the good vectors and on names of bad files never touch the bad files
    lib.rename("good", "good2")
    lib.delete("c/other")
    with pytest.raises(LibraryError):
        lib.save(love, "garbage")
    with pytest.raises(VectorFileError):
        lib.load("truncated")
    assert {rel: (lib.root / rel).read_bytes() for rel in bad} == before


def test_hidden_folders_and_temp_files_are_skipped(lib, love):
    lib.save(love, "v")
    (lib.root / ".tmp-abc123.safetensors").write_bytes(b"half a write")
    (lib.root / "c").mkdir()
    (lib.root / "c" / ".tmp-x.safetensors").write_bytes(b"")
    (lib.root / ".hidden").mkdir()
    (lib.root / ".hidden" / "x.safetensors").write_bytes(b"junk")
    lib.delete("v")
    lib.save(love, "w")
    listing = lib.list()
    assert listing.keys() == ["w"] and listing.bad_files == []


def test_nested_folder_is_reported_not_descended(lib, love):
    lib.save(love, "v", collection="c")
    save_vector(love, lib.root / "c" / "deeper" / "x.safetensors")
    listing = lib.list()
    assert listing.keys() == ["c/v"]
    assert [b.path.name for b in listing.bad_files] == ["deeper"]


# ---- names ----------------------------------------------------------------------------------------------
BAD_NAMES = ["", " ", " x", "x ", ".", "..", "../x", "a/b", "a\\b", "x\x00", "tab\there", "bell\x07",
             "del\x7f", ".hidden", "dot.", "a:b", "star*", "q?", "<x>", 'quo"te', "pi|pe", "x" * 201]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_everywhere(lib, name):
    v = synthetic()
    lib.save(v, "ok")
    with pytest.raises(LibraryError):
        check_name(name)
    with pytest.raises(LibraryError):
        lib.save(v, name)
    if "/" not in name:
        if name:  # "" is the top level
            with pytest.raises(LibraryError):
                lib.save(v, "fine", collection=name)
        with pytest.raises(LibraryError):
            lib.rename("ok", name)
        with pytest.raises(LibraryError):
            lib.duplicate("ok", name)
    assert lib.list().keys() == ["ok"]
    assert sorted(p.name for p in lib.root.iterdir() if not p.name.startswith(".")) == ["ok.safetensors"]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_accepted_names_stay_inside_the_library(name):
    root = Path("/library-root")
    try:
        check_name(name)
    except LibraryError:
        return
    path = Library(root).path_of(name)
    assert path.parent == root and path.name == name + ".safetensors"
    assert not path.name.startswith(".")


def test_unicode_names_are_fine(lib):
    lib.save(synthetic(), "love−hate ❤ 日本")
    assert lib.list().keys() == ["love−hate ❤ 日本"]


# ---- collisions ---------------------------------------------------------------------------------------
def test_name_collision_never_overwrites(lib, love, anger):
    path = lib.save(love, "v")
    original = path.read_bytes()
    with pytest.raises(LibraryError, match="already exists"):
        lib.save(anger, "v")
    assert path.read_bytes() == original
    lib.save(anger, "v", overwrite=True)
    assert same_layers(lib.load("v"), anger)
    assert not [p for p in lib.root.iterdir() if p.name.startswith(".tmp-")]


# ---- resolve -----------------------------------------------------------------------------------------
def test_resolve_bare_names_and_ambiguity(lib):
    lib.save(synthetic(), "only", collection="a")
    lib.save(synthetic(), "both", collection="a")
    lib.save(synthetic(), "both", collection="b")
    assert lib.resolve("only") == lib.root / "a" / "only.safetensors"
    with pytest.raises(LibraryError, match="ambiguous"):
        lib.resolve("both")
    assert lib.resolve("b/both") == lib.root / "b" / "both.safetensors"
    with pytest.raises(LibraryError, match="no vector"):
        lib.resolve("missing")
    with pytest.raises(LibraryError):
        lib.resolve("a/b/c")


# ---- rename, tags, notes, duplicate -------------------------------------------------------------------
def test_rename(lib, love):
    lib.save(love, "old", collection="c")
    new = lib.rename("c/old", "new")
    assert new == lib.root / "c" / "new.safetensors"
    assert lib.list().keys() == ["c/new"]
    loaded = lib.load("c/new")
    assert loaded.name == "new" and same_layers(loaded, love)
    assert loaded.provenance["pad_token"] == love.provenance["pad_token"]

    moved = lib.rename("c/new", "d/moved")
    assert lib.key_of(moved) == "d/moved"
    top = lib.rename("d/moved", "/top")
    assert lib.key_of(top) == "top"

    lib.save(synthetic(hidden=64), "taken")
    with pytest.raises(LibraryError, match="already exists"):
        lib.rename("top", "taken")
    assert sorted(lib.list().keys()) == ["taken", "top"]
    lib.rename("top", "taken", overwrite=True)
    assert lib.list().keys() == ["taken"] and same_layers(lib.load("taken"), love)
    with pytest.raises(LibraryError):
        lib.rename("missing", "x")


def test_tags_and_notes(lib, love):
    lib.save(love, "v")
    lib.set_tags("v", ["mood", "paper", "mood", " spaced "])
    lib.set_notes("v", "c=5 works well\nsecond line")
    (entry,) = lib.list().entries
    assert entry.tags == ("mood", "paper", "spaced")
    assert entry.notes == "c=5 works well\nsecond line"
    assert same_layers(lib.load("v"), love)
    with pytest.raises(LibraryError):
        lib.set_tags("v", ["bad\x00tag"])
    with pytest.raises(LibraryError):
        lib.set_tags("v", "not-a-list")
    with pytest.raises(LibraryError):
        lib.set_notes("v", "x" * 300_000)
    lib.set_tags("v", [])
    assert lib.list().entries[0].tags == ()


def test_duplicate(lib, love):
    lib.save(love, "v", collection="c")
    path = lib.duplicate("c/v", "copy")
    assert path == lib.root / "c" / "copy.safetensors"
    assert same_layers(lib.load("c/copy"), love)
    assert lib.load("c/copy").prompts == love.prompts
    with pytest.raises(LibraryError):
        lib.duplicate("c/v", "copy")
    lib.duplicate("c/v", "other/copy")
    assert sorted(lib.list().keys()) == ["c/copy", "c/v", "other/copy"]


# ---- trash -----------------------------------------------------------------------------------------------
def test_delete_trash_restore(lib, love, anger):
    lib.save(love, "v", collection="c")
    original = (lib.root / "c" / "v.safetensors").read_bytes()
    trash_id = lib.delete("c/v")
    assert lib.list().keys() == []
    (item,) = lib.trash()
    assert item.key == trash_id and item.trash_id == trash_id
    assert item.name == "v" and item.collection == "c" and item.layers == [1, 2]
    assert item.deleted

    restored = lib.restore(trash_id)
    assert restored == lib.root / "c" / "v.safetensors"
    assert restored.read_bytes() == original
    assert lib.trash() == [] and lib.list().keys() == ["c/v"]

    # a name taken meanwhile: restore refuses, or restores under a new name
    trash_id = lib.delete("c/v")
    lib.save(anger, "v", collection="c")
    with pytest.raises(LibraryError, match="new name"):
        lib.restore(trash_id)
    assert same_layers(lib.load("c/v"), anger)
    lib.restore(trash_id, new_name="v-restored")
    assert same_layers(lib.load("c/v-restored"), love)

    with pytest.raises(LibraryError):
        lib.restore("../../etc")
    with pytest.raises(LibraryError):
        lib.restore("20240101T000000Z-abcdef")
    with pytest.raises(LibraryError):
        lib.delete("missing")


def test_empty_trash(lib):
    for i in range(3):
        lib.save(synthetic(), f"v{i}")
        lib.delete(f"v{i}")
    assert len(lib.trash()) == 3
    assert lib.empty_trash() == 3
    assert lib.trash() == []


def test_trash_survives_a_delete_killed_before_its_rename(lib):
    lib.save(synthetic(), "v")
    (lib.root / ".trash" / "20240101T000000Z-deadbeef").mkdir(parents=True)
    (lib.root / ".trash" / "20240101T000000Z-deadbeef" / "origin.json").write_text("{}")
    assert lib.trash() == [] and lib.list().keys() == ["v"]


# ---- combine and to-direction ----------------------------------------------------------------------------
def test_combine(lib, love, anger):
    lib.save(love, "love", collection="e")
    lib.save(anger, "anger")
    n = min(love.n_tokens, anger.n_tokens)
    if love.shape != anger.shape:  # combine needs equal shapes: trim to a common length
        love2 = love.replace(layers={l: t[:n] for l, t in love.layers.items()})
        anger2 = anger.replace(layers={l: t[:n] for l, t in anger.layers.items()})
        lib.save(love2, "love", collection="e", overwrite=True)
        lib.save(anger2, "anger", overwrite=True)
        love, anger = love2, anger2
    path = lib.combine([(2.0, "e/love"), (-0.5, "anger")], "mix")
    assert path == lib.root / "e" / "mix.safetensors"
    mix = lib.load("e/mix")
    assert mix.method == "combined" and mix.layer_ids == [1, 2]
    for l in (1, 2):
        torch.testing.assert_close(mix.layers[l], 2.0 * love.layers[l] - 0.5 * anger.layers[l])
    assert mix.prompts["combined_from"] == [
        {"coeff": 2.0, "name": "e/love"},
        {"coeff": -0.5, "name": "anger"},
    ]
    with pytest.raises(LibraryError):
        lib.combine([(1.0, "e/love")], "mix")  # no overwrite
    with pytest.raises(LibraryError):
        lib.combine([(float("nan"), "e/love")], "nan")
    with pytest.raises(LibraryError):
        lib.combine([], "empty")


def test_combine_refuses_mismatches(lib, love, llama_love):
    lib.save(love, "gpt2-love")
    lib.save(llama_love, "llama-love")
    lib.save(love.replace(layers={1: love.layers[1]}), "one-layer")
    lib.save(synthetic(hidden=32, layers=(1, 2), rows=love.n_tokens), "narrow")
    with pytest.raises(IncompatibleVectorError, match="layers differ"):
        lib.combine([(1, "gpt2-love"), (1, "one-layer")], "x")
    with pytest.raises(IncompatibleVectorError, match="shapes differ"):
        lib.combine([(1, "gpt2-love"), (1, "narrow")], "x")
    with pytest.raises(IncompatibleVectorError, match="shapes differ"):
        lib.combine([(1, "gpt2-love"), (1, "narrow")], "x", allow_other_model=True)
    if llama_love.shape == love.shape:  # same width, other model: only with the override
        with pytest.raises(IncompatibleVectorError, match="different models"):
            lib.combine([(1, "gpt2-love"), (1, "llama-love")], "x")
        lib.combine([(1, "gpt2-love"), (1, "llama-love")], "x", allow_other_model=True)
    other = love.replace(fingerprint=ModelFingerprint("gpt2", 64, 3, "ffffffffffffffff", "other"))
    lib.save(other, "other-model")
    with pytest.raises(IncompatibleVectorError, match="different models"):
        lib.combine([(1, "gpt2-love"), (1, "other-model")], "y")
    lib.combine([(1, "gpt2-love"), (1, "other-model")], "y", allow_other_model=True)
    assert "y" in lib.list().keys()  # noqa: SIM118 - Listing.keys() is a list of keys


def test_to_direction(lib, love):
    lib.save(love, "v", collection="c")
    path = lib.to_direction("c/v", "v-mean")
    assert path == lib.root / "c" / "v-mean.safetensors"
    direction = lib.load("c/v-mean")
    assert direction.shape == [64] and direction.default_mode == "all"
    for l in (1, 2):
        rows = love.layers[l][1:] if not love.layers[l][0].any() else love.layers[l]
        torch.testing.assert_close(direction.layers[l], rows.mean(dim=0))
    assert direction.provenance["to_direction"] == "mean over positions"
    assert direction.provenance["direction_from"] == "c/v"
    assert direction.prompts == love.prompts

    lib.to_direction("c/v", "v-last", position=-1)
    torch.testing.assert_close(lib.load("c/v-last").layers[2], love.layers[2][-1])
    with pytest.raises(IncompatibleVectorError, match="already"):
        lib.to_direction("c/v-mean", "again")
    with pytest.raises(IncompatibleVectorError, match="outside"):
        lib.to_direction("c/v", "far", position=99)
    entry = next(e for e in lib.list() if e.name == "v-mean")
    assert entry.shape == [64] and not entry.is_positional


# ---- compatibility ----------------------------------------------------------------------------------------
def test_compatibility(lib, love, gpt2, llama):
    lib.save(love, "gpt2-love")
    lib.save(synthetic(hidden=32, layers=(1,)), "narrow")
    lib.save(synthetic(hidden=64, layers=(1,), rows=None, method="imported"), "imported-no-model")
    lib.save(love.replace(layers={5: love.layers[1]}), "deep")
    entries = {e.key: e for e in lib.list()}
    check = lib.compatibility
    assert check(entries["gpt2-love"], gpt2.fingerprint) == (Compatibility.OK, "captured on this model")
    status, reason = check(entries["gpt2-love"], llama.fingerprint)
    assert status == Compatibility.OTHER_MODEL and "another model" in reason
    status, reason = check(entries["narrow"], gpt2.fingerprint)
    assert status == Compatibility.INCOMPATIBLE and "hidden size 32" in reason
    status, reason = check(entries["deep"], gpt2.fingerprint)
    assert status == Compatibility.INCOMPATIBLE and "layer 5" in reason
    assert check(entries["imported-no-model"], gpt2.fingerprint)[0] == Compatibility.OK

    usable = lib.compatible(gpt2.fingerprint)
    assert [(e.key, c) for e, c, _ in usable] == [
        ("gpt2-love", Compatibility.OK),
        ("imported-no-model", Compatibility.OK),
    ]
    on_llama = {e.key: c for e, c, _ in lib.compatible(llama.fingerprint)}
    assert on_llama == {"imported-no-model": Compatibility.OK, "gpt2-love": Compatibility.OTHER_MODEL}
    assert lib.list(model=gpt2.fingerprint).keys() == ["gpt2-love", "imported-no-model"]
    # the same rules as check_fits, which generation uses
    with pytest.raises(IncompatibleVectorError):
        engine.check_fits(lib.load("gpt2-love"), llama.fingerprint)
    assert engine.check_fits(lib.load("gpt2-love"), llama.fingerprint, allow_other_model=True)


# ---- filters and show -------------------------------------------------------------------------------------
def test_list_filters(lib, love, anger):
    lib.save(love, "love", collection="moods")
    lib.save(anger.replace(tags=("Anger", "paper")), "anger")
    lib.save(synthetic(hidden=64, rows=None, method="pca", notes="formal tone from 40 pairs"), "formal")
    assert lib.list(tag="paper").keys() == ["anger"]
    assert lib.list(tag="ANGER").keys() == ["anger"]
    assert lib.list(tag="emotion").keys() == ["moods/love"]
    assert lib.list(method="pca").keys() == ["formal"]
    assert lib.list(text="love").keys() == ["moods/love"]
    assert lib.list(text="calm").keys() == ["anger"]  # prompts are searched
    assert lib.list(text="40 PAIRS").keys() == ["formal"]  # notes too
    assert lib.list(collection="moods").keys() == ["moods/love"]
    assert lib.list(collection="").keys() == ["anger", "formal"]
    assert lib.list(tag="paper", method="pca").keys() == []
    assert lib.collections() == ["moods"]


def test_show(lib, love, gpt2, llama):
    lib.save(love, "v", collection="c")
    info = lib.show("c/v")
    assert info["key"] == "c/v" and info["method"] == "actadd" and info["layers"] == [1, 2]
    assert info["norms"] == {str(l): pytest.approx(n) for l, n in love.norms().items()}
    assert info["prompts"] == {"positive": "Love", "negative": "Hate"}
    assert info["provenance"]["pad_token"] == love.provenance["pad_token"]
    assert info["fingerprint"]["id"] == gpt2.fingerprint.id
    assert "hidden size 64" in info["compatible_models"]["other_models"]
    json.dumps(info)
    assert lib.show("c/v", model=llama.fingerprint)["compatibility"]["status"] == "other-model"
    assert lib.show("c/v", model=gpt2.fingerprint)["compatibility"]["status"] == "ok"


# ---- kill -9 in the middle of saves ------------------------------------------------------------------
@pytest.fixture(scope="module")
def zygote():
    if not hasattr(os, "fork"):
        pytest.skip("the kill tests fork a writer (POSIX)")
    z = Zygote(WRITER)
    yield z
    z.close()


def check_after_kill(root: Path, log: str) -> int:
    """Every save the log calls done loads with its own values; no visible file is broken."""
    lib = Library(root)
    listing = lib.list()
    assert listing.bad_files == [], listing.bad_files
    visible = [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(x.startswith(".") for x in p.relative_to(root).parts)
    ]
    assert len(visible) == len(listing.entries)
    for path in visible:
        vector = load_vector(path)  # raises on any half-written file
        values = {float(t.flatten()[0]) for t in vector.layers.values()}
        assert len(values) == 1 and all(bool((t == t.flatten()[0]).all()) for t in vector.layers.values())
    if (root / INDEX_NAME).exists():
        json.loads((root / INDEX_NAME).read_text())  # written atomically: always whole

    expected: dict[str, int] = {}
    in_flight_rename: tuple[str, str] | None = None
    overwrite_done, overwrite_started = None, None
    done = 0
    for line in log.splitlines():
        phase, op, *args = line.split()
        if op == "save" and phase == "done":
            expected[args[0]] = int(args[1])
            done += 1
        elif op == "rename":
            in_flight_rename = (args[0], args[1]) if phase == "start" else None
            if phase == "done":
                expected[args[1]] = expected.pop(args[0])
        elif op == "overwrite":
            if phase == "start":
                overwrite_started = int(args[1])
            else:
                overwrite_done = int(args[1])
    if in_flight_rename:  # killed mid-rename: the vector is under the old name, the new one, or both
        old, new = in_flight_rename
        value = expected.pop(old)
        found = [n for n in (old, new) if (root / f"{n}.safetensors").exists()]
        assert found, f"rename {old} -> {new} lost the vector"
        for n in found:
            assert float(load_vector(root / f"{n}.safetensors").layers[1][0, 0]) == value
    for name, value in expected.items():
        vector = load_vector(root / f"{name}.safetensors")
        assert float(vector.layers[1][0, 0]) == value, name
    current = [p for p in visible if p.stem.endswith("-current")]
    if overwrite_done is not None:
        (path,) = current
        assert float(load_vector(path).layers[1][0, 0]) in {overwrite_done, overwrite_started}
    return done


def kill_rounds(zygote, tmp_path, rounds: int, seed: int) -> int:
    """Kill a busy writer `rounds` times; returns how many kills landed inside a write (temp file left)."""
    rng = random.Random(seed)
    total = mid_write = 0
    for r in range(rounds):
        root = tmp_path / f"lib{r}"
        log = tmp_path / f"log{r}.txt"
        pid = zygote.fork(role="saver", library=str(root), log=str(log), prefix=f"r{r}", seed=r)
        time.sleep(rng.uniform(0.02, 0.5))
        os.kill(pid, signal.SIGKILL)
        status = zygote.wait(pid)
        assert status["signal"] == signal.SIGKILL, f"the writer ended on its own: {status}"
        total += check_after_kill(root, log.read_text() if log.exists() else "")
        mid_write += any(root.rglob(".tmp-*"))
        shutil.rmtree(root, ignore_errors=True)  # absent when killed before the first write
    assert total > 0, "no save completed before the kills; the test proved nothing"
    return mid_write


def test_kill_during_saves_loses_nothing(zygote, tmp_path):
    kill_rounds(zygote, tmp_path, rounds=10, seed=random.randrange(1 << 30))


@pytest.mark.slow
def test_kill_during_saves_100_times(zygote, tmp_path):
    # about half the kills land inside a write; over 100 rounds some certainly do
    assert kill_rounds(zygote, tmp_path, rounds=100, seed=1234) > 0


# ---- two processes at once -----------------------------------------------------------------------------
def test_two_processes_saving_and_renaming_at_once(zygote, tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    iterations = 30
    logs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    pids = [
        zygote.fork(
            role="racer", library=str(root), log=str(log), prefix=prefix, seed=i, iterations=iterations
        )
        for i, (prefix, log) in enumerate(zip(["a", "b"], logs, strict=True))
    ]
    (root / ".go").write_text("")
    lib = Library(root)
    deadline = time.monotonic() + 120
    # a third party lists (and rewrites the index) while the two write
    while not all(log.exists() and log.read_text().count("save") >= iterations for log in logs):
        assert time.monotonic() < deadline, "the writers did not finish"
        listing = lib.list()
        assert listing.bad_files == []
    for pid in pids:
        assert zygote.wait(pid) == {"exit": 0, "signal": None}

    expected: dict[str, int] = {}
    won: dict[str, int] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            _, op, a, b = line.split()
            if op == "save":
                expected[a] = int(b)
            elif op == "rename":
                expected[b] = expected.pop(a)
            elif op == "won":
                won[a] = won.get(a, 0) + 1
    listing = lib.list()
    assert listing.bad_files == []
    keys = set(listing.keys())
    assert set(expected) <= keys
    for name, value in expected.items():
        assert float(lib.load(name).layers[1][0, 0]) == value
    # each contested name went to exactly one writer, whole
    for i in range(iterations):
        assert won.get(f"shared-{i}") == 1, f"shared-{i}"
        assert float(lib.load(f"shared-{i}").layers[1][0, 0]) == 1000 + i
    assert keys == set(expected) | {f"shared-{i}" for i in range(iterations)}
    index = json.loads((root / INDEX_NAME).read_text())
    assert set(index["files"]) == {f"{k}.safetensors" for k in keys}


def test_sweep_temp_files_only_removes_old_leftovers(lib):
    lib.save(synthetic(), "v", collection="c")
    old = lib.root / "c" / ".tmp-killed.safetensors"
    fresh = lib.root / ".tmp-in-progress.safetensors"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(old, (time.time() - 7 * 86400, time.time() - 7 * 86400))
    assert lib.sweep_temp_files() == 1
    assert not old.exists() and fresh.exists()
    assert lib.list().keys() == ["c/v"]
