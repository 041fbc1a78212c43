"""Finding the models on this machine: every source, from headers only, and every broken file as a row."""

from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf_files import N_PARAMS, write_gguf

from engine import InvalidInputError
from engine.cli import main
from engine.gguf_header import gguf_openability, is_gguf_file, read_gguf_header, supported_gguf_architectures
from engine.model_store import ModelEntry, list_models, remember_recent
from engine.transformers_tables import transformers_version

ROW_KEYS = {
    "name", "source", "path", "format", "architecture", "n_params", "quantization", "size_bytes", "openable", "reason"
}  # fmt: skip


def by_name(rows: list[ModelEntry]) -> dict[str, ModelEntry]:
    return {r.name: r for r in rows}


# ---- the header check ------------------------------------------------------------------------------------
def test_a_good_gguf_reads_like_gguf_reader(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", name="Tiny Llama")
    check = gguf_openability(path)
    assert check.ok and check.reason is None
    assert (check.architecture, check.quant_type, check.name) == ("llama", "Q8_0", "Tiny Llama")
    reader = gguf.GGUFReader(path)
    assert check.n_params == N_PARAMS == sum(int(t.n_elements) for t in reader.tensors)
    header = read_gguf_header(path)
    assert header.data_offset == reader.data_offset
    assert [t.name for t in header.tensors] == [t.name for t in reader.tensors]
    assert header.get("tokenizer.ggml.tokens") == ("array", 8, 64)


@pytest.mark.parametrize("long_strings", [40, 600])  # 600: past the fast path's cap on plain steps
def test_a_large_odd_vocabulary_is_skipped_exactly_like_gguf_reader_reads_it(tmp_path, long_strings):
    """Vocabularies are skipped at numpy speed; empty, 256+-byte and zero-filled tokens and chunk edges included."""
    rng = random.Random(long_strings)
    tokens = [
        "".join(rng.choice("abcdefghij\u0120\u00e9") for _ in range(rng.choice([0, 1, 3, 8, 20, 40, 90])))
        for _ in range(20000)
    ]
    for i in rng.sample(range(len(tokens)), long_strings):
        tokens[i] = "x" * rng.randint(256, 2000)
    for i in rng.sample(range(len(tokens)), 60):
        tokens[i] = "\x00" * rng.randint(1, 30) + rng.choice(["", "a", "\x00"])
    writer = gguf.GGUFWriter(tmp_path / "odd.gguf", "llama")
    writer.add_token_list(tokens)
    writer.add_token_merges(tokens[::-1])
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))  # a key after the arrays, as Gemma's files have
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header, reader = read_gguf_header(tmp_path / "odd.gguf"), gguf.GGUFReader(tmp_path / "odd.gguf")
    assert header.data_offset == reader.data_offset
    assert [(t.name, t.offset) for t in header.tensors] == [
        (t.name, t.data_offset - reader.data_offset) for t in reader.tensors
    ]
    assert header.get("general.file_type") == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes((tmp_path / "odd.gguf").read_bytes()[: header.data_offset // 2])
    assert "cut short" in gguf_openability(cut).reason


def test_the_quant_type_falls_back_to_the_weights_commonest_type(tmp_path):
    assert gguf_openability(write_gguf(tmp_path / "a.gguf", file_type=None)).quant_type == "Q8_0"


def test_supported_architectures_come_from_transformers():
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    supported = supported_gguf_architectures()
    assert {"llama", "qwen2", "gemma3", "gpt2"} <= set(supported) <= set(GGUF_CONFIG_MAPPING)
    assert "general" not in supported and "tokenizer" not in supported


@pytest.mark.parametrize(
    ("arch", "kv", "filename", "reason"),
    [
        ("bert", {}, "e.gguf", r"architecture 'bert'.*can't read from GGUF; supported: .*llama"),
        (
            "llama",
            {"general.type": "adapter", "adapter.type": "lora"},
            "a.gguf",
            r"a lora adapter, not a model",
        ),
        ("controlvector", {}, "cv.gguf", r"a control vector; import it into the Library"),
        ("clip", {"general.type": "mmproj"}, "mmproj.gguf", r"vision projector \(mmproj\)"),
        (
            "llama",
            {"split.count": 3},
            "m-00001-of-00003.gguf",
            r"one part of a model split into 3 files",
        ),
        ("llama", {}, "m-00002-of-00003.gguf", r"one part of a model split"),
        ("t5", {}, "t5.gguf", r"'t5' model, not a causal language model"),
    ],
)
def test_files_that_are_not_openable_models_say_why(tmp_path, arch, kv, filename, reason):
    check = gguf_openability(write_gguf(tmp_path / filename, arch, kv=kv))
    assert not check.ok
    assert check.reason is not None and re.search(reason, check.reason), check.reason


def test_moe_names_map_to_transformers_names(tmp_path):
    check = gguf_openability(write_gguf(tmp_path / "moe.gguf", "qwen2moe"))
    assert check.ok and check.architecture == "qwen2moe"


def test_vocabulary_only_truncated_empty_and_foreign_files(tmp_path):
    assert "holds no weights" in gguf_openability(write_gguf(tmp_path / "v.gguf", tensors=False)).reason
    good = write_gguf(tmp_path / "good.gguf").read_bytes()
    header_end = read_gguf_header(tmp_path / "good.gguf").data_offset
    (tmp_path / "cut-data.gguf").write_bytes(good[: header_end + 100])
    assert "is truncated: its tensors need" in gguf_openability(tmp_path / "cut-data.gguf").reason
    (tmp_path / "cut-header.gguf").write_bytes(good[:300])
    assert "cut short (truncated or corrupt file)" in gguf_openability(tmp_path / "cut-header.gguf").reason
    (tmp_path / "empty.gguf").write_bytes(b"")
    assert "too short" in gguf_openability(tmp_path / "empty.gguf").reason
    (tmp_path / "zip.gguf").write_bytes(b"PK\x03\x04" + bytes(100))
    assert "not a GGUF file" in gguf_openability(tmp_path / "zip.gguf").reason
    (tmp_path / "v1.gguf").write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(40))
    assert "version 1 is not supported" in gguf_openability(tmp_path / "v1.gguf").reason
    huge = b"GGUF" + (3).to_bytes(4, "little") + (2**60).to_bytes(8, "little") + bytes(16)
    (tmp_path / "huge.gguf").write_bytes(huge)
    assert "implausible" in gguf_openability(tmp_path / "huge.gguf").reason
    assert "can't be read" in gguf_openability(tmp_path / "missing.gguf").reason


# ---- sources ---------------------------------------------------------------------------------------------
def _only(source: str, **roots) -> list[ModelEntry]:
    return list_models([source], header_cache=False, **roots)


def test_lmstudio_folders_and_unreadable_entries(tmp_path):
    root = tmp_path / "lms"
    write_gguf(root / "lmstudio-community" / "Tiny-GGUF" / "tiny.Q8_0.gguf")
    write_gguf(root / "bartowski" / "Other-GGUF" / "mmproj-other.gguf", "clip", kv={"general.type": "mmproj"})
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "y" / "dangling.gguf").symlink_to(tmp_path / "gone.gguf")
    os.mkfifo(root / "x" / "y" / "pipe.gguf")  # would block any reader forever
    write_gguf(root / ".hidden" / "skip.gguf")
    second = tmp_path / "cache-lms"
    write_gguf(second / "pub" / "repo" / "b.gguf")
    rows = by_name(_only("lmstudio", lmstudio_roots=[root, second, tmp_path / "absent"]))
    assert set(rows) == {
        "lmstudio-community/Tiny-GGUF/tiny.Q8_0",
        "bartowski/Other-GGUF/mmproj-other",
        "x/y/dangling",
        "x/y/pipe",
        "pub/repo/b",
    }
    tiny = rows["lmstudio-community/Tiny-GGUF/tiny.Q8_0"]
    assert (tiny.source, tiny.format, tiny.architecture, tiny.quantization) == (
        "lmstudio",
        "gguf",
        "llama",
        "Q8_0",
    )
    assert tiny.openable and tiny.n_params == N_PARAMS and tiny.size_bytes == Path(tiny.path).stat().st_size
    assert not rows["bartowski/Other-GGUF/mmproj-other"].openable
    assert "can't be read" in rows["x/y/dangling"].reason
    assert "not a regular file" in rows["x/y/pipe"].reason


def _manifest(root: Path, parts: tuple[str, ...], layers) -> Path:
    path = root / "manifests" / Path(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"schemaVersion": 2, "layers": layers}) if not isinstance(layers, str) else layers
    )
    return path


def _blob(root: Path, source: Path, digest: str, sep: str = "-") -> None:
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256{sep}{digest}").write_bytes(source.read_bytes())


def test_ollama_manifests_lead_to_gguf_blobs_with_ollama_names(tmp_path):
    root, good = tmp_path / "ollama", write_gguf(tmp_path / "src.gguf")
    model = "application/vnd.ollama.image.model"
    _blob(root, good, "a" * 64)
    _blob(root, good, "b" * 64, sep=":")  # older Ollama named blobs sha256:HEX
    (root / "blobs" / f"sha256-{'c' * 64}").write_bytes(good.read_bytes()[:400])  # truncated download
    layers = [{"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "9" * 64}]
    _manifest(
        root,
        ("registry.ollama.ai", "library", "llama3.2", "1b"),
        [*layers, {"mediaType": model, "digest": "sha256:" + "a" * 64}],
    )
    _manifest(
        root,
        ("registry.ollama.ai", "someone", "tiny", "latest"),
        [{"mediaType": model, "digest": "sha256:" + "b" * 64}],
    )
    _manifest(root, ("hf.co", "org", "repo", "Q8_0"), [{"mediaType": model, "digest": "sha256:" + "c" * 64}])
    _manifest(root, ("registry.ollama.ai", "library", "broken", "latest"), "{not json")
    _manifest(root, ("registry.ollama.ai", "library", "nolayer", "latest"), layers)
    _manifest(
        root,
        ("registry.ollama.ai", "library", "noblob", "latest"),
        [{"mediaType": model, "digest": "sha256:" + "d" * 64}],
    )
    _manifest(
        root,
        ("registry.ollama.ai", "library", "escape", "latest"),
        [{"mediaType": model, "digest": "sha256:../../x"}],
    )
    _manifest(root, ("registry.ollama.ai", "library", "list", "latest"), "[1, 2]")  # fmt: skip
    rows = by_name(_only("ollama", ollama_root=root))
    assert rows["llama3.2:1b"].openable and rows["llama3.2:1b"].architecture == "llama"
    assert rows["llama3.2:1b"].path == str(root / "blobs" / f"sha256-{'a' * 64}")
    assert rows["someone/tiny:latest"].openable
    assert is_gguf_file(rows["llama3.2:1b"].path) and not is_gguf_file(
        root / "manifests" / "hf.co" / "org" / "repo" / "Q8_0"
    )
    assert not is_gguf_file(root / "blobs") and not is_gguf_file(root / "nothing-here")
    assert not rows["hf.co/org/repo:Q8_0"].openable and "truncated" in rows["hf.co/org/repo:Q8_0"].reason
    assert "not valid JSON" in rows["broken:latest"].reason and "not valid JSON" in rows["list:latest"].reason
    assert "no model layer" in rows["nolayer:latest"].reason
    assert "missing from" in rows["noblob:latest"].reason
    assert "malformed digest" in rows["escape:latest"].reason
    assert not any(r.openable for r in rows.values() if r.name.endswith(("broken:latest", "nolayer:latest")))
    assert _only("ollama", ollama_root=tmp_path / "no-ollama") == []


def test_gpt4all_folder(tmp_path):
    write_gguf(tmp_path / "gpt4all" / "Meta-Llama-3-8B-Instruct.Q4_0.gguf")
    (tmp_path / "gpt4all" / "localdocs_v2.db").write_bytes(b"sqlite")
    rows = _only("gpt4all", gpt4all_roots=[tmp_path / "gpt4all"])
    assert [(r.name, r.source, r.openable) for r in rows] == [
        ("Meta-Llama-3-8B-Instruct.Q4_0", "gpt4all", True)
    ]


def _hf_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    for name, data in files.items():
        blob = repo / "blobs" / f"{abs(hash(name + repo_id)):x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(blob)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return snapshot


def test_hugging_face_cache_folders_and_gguf_repos(tmp_path, model_dirs):
    cache, gpt2 = tmp_path / "hub", model_dirs["gpt2"]
    files = {f.name: f.read_bytes() for f in gpt2.iterdir() if f.is_file()}
    snapshot = _hf_repo(cache, "org/tiny-gpt2", files)
    _hf_repo(cache, "org/Tiny-GGUF", {"tiny.Q8_0.gguf": write_gguf(tmp_path / "t.gguf").read_bytes()})
    _hf_repo(cache, "org/tokenizer-only", {"tokenizer.json": files["tokenizer.json"]})
    _hf_repo(cache, "org/remote", {"config.json": b'{"model_type": "mystery", "auto_map": {}}', "model.safetensors": files["model.safetensors"]})  # fmt: skip
    rows = by_name(_only("hf-cache", hf_cache=cache))
    tiny = rows["org/tiny-gpt2"]
    assert (tiny.format, tiny.architecture, tiny.openable, tiny.path) == (
        "folder",
        "gpt2",
        True,
        str(snapshot),
    )
    from safetensors import safe_open

    with safe_open(gpt2 / "model.safetensors", "pt") as f:
        assert tiny.n_params == sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (not a dict)
    assert tiny.size_bytes == sum(len(b) for b in files.values())
    assert rows["org/Tiny-GGUF/tiny.Q8_0"].openable and rows["org/Tiny-GGUF/tiny.Q8_0"].quantization == "Q8_0"
    assert "config.json is missing" in rows["org/tokenizer-only"].reason
    assert "needs trust_remote_code" in rows["org/remote"].reason
    assert _only("hf-cache", hf_cache=tmp_path / "no-cache") == []


def test_gguf_files_shipped_inside_python_packages(tmp_path):
    site = tmp_path / "site"
    write_gguf(site / "llm_tiny" / "Tiny.Q8_0.gguf")
    info = site / "llm_tiny-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llm-tiny\nVersion: 0.1\n")
    (info / "RECORD").write_text(
        "llm_tiny/Tiny.Q8_0.gguf,sha256=x,1\nllm_tiny/__init__.py,,\nllm_tiny/gone.gguf,sha256=y,2\n"
        "llm_tiny-0.1.dist-info/RECORD,,\n"
    )
    rows = _only("python-package", package_paths=[str(site)])
    assert [(r.name, r.source, r.openable) for r in rows] == [("llm-tiny/Tiny.Q8_0", "python-package", True)]


def test_recent_models_are_remembered_newest_first(tmp_path, model_dirs):
    recent = tmp_path / "config" / "recent-models.json"
    gguf_file = write_gguf(tmp_path / "r.gguf")
    remember_recent(gguf_file, file=recent)
    remember_recent(model_dirs["gpt2"], file=recent)
    remember_recent(tmp_path / "soon-gone.gguf", file=recent)
    remember_recent("demo", file=recent)  # the embedded demo is not a model on disk
    remember_recent(gguf_file, file=recent)  # again: moves to the top, not listed twice
    rows = _only("recent", recent_file=recent)
    assert [r.name for r in rows] == ["r", "soon-gone", "gpt2"]
    assert rows[0].openable and rows[2].format == "folder" and rows[2].openable
    assert not rows[1].openable and "no longer exists" in rows[1].reason
    recent.write_text("{broken")
    assert _only("recent", recent_file=recent) == []
    remember_recent(gguf_file, file=recent)  # a damaged list is replaced, not fatal
    assert [r.name for r in _only("recent", recent_file=recent)] == ["r"]


def test_a_model_opened_by_the_cli_is_listed_as_recent(tmp_path, monkeypatch, model_dirs, capsys):
    monkeypatch.setenv("ACTADD_CONFIG_DIR", str(tmp_path / "config"))
    args = ["--prompt", "Hello", "--max-new-tokens", "1", "--json", "--device", "cpu"]
    assert main(["generate", "--model", str(model_dirs["gpt2"]), *args]) == 0
    assert main(["generate", "--model", "demo", *args]) == 0  # the demo is not remembered
    capsys.readouterr()
    rows = list_models(["recent"], header_cache=False)
    assert [(r.path, r.source, r.openable) for r in rows] == [
        (str(model_dirs["gpt2"].resolve()), "recent", True)
    ]


def test_recent_list_in_an_unwritable_place_only_warns(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    remember_recent(write_gguf(tmp_path / "r.gguf"), file=blocker / "recent.json")
    assert "could not update the recent models list" in caplog.text


def test_a_model_in_a_store_and_in_recent_is_listed_once(tmp_path):
    file = write_gguf(tmp_path / "g" / "m.gguf")
    remember_recent(file, file=tmp_path / "recent.json")
    rows = list_models(
        ["gpt4all", "recent"],
        gpt4all_roots=[tmp_path / "g"],
        recent_file=tmp_path / "recent.json",
        header_cache=False,
    )
    assert [(r.name, r.source) for r in rows] == [("m", "gpt4all")]


def test_unknown_source_is_refused():
    with pytest.raises(InvalidInputError, match="unknown model source 'lmstudio2'"):
        list_models(["lmstudio2"])


def test_header_verdicts_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    root, cache = tmp_path / "g", tmp_path / "cache.json"
    file = write_gguf(root / "m.gguf")
    first = list_models(["gpt4all"], gpt4all_roots=[root], header_cache=cache)
    assert cache.exists()

    def no_parsing(path):
        raise AssertionError("a cached header was parsed again")

    monkeypatch.setattr("engine.model_inspect.gguf_openability", no_parsing)
    assert list_models(["gpt4all"], gpt4all_roots=[root], header_cache=cache) == first
    file.write_bytes(file.read_bytes()[:500])  # changed: size and mtime differ, so it is read again
    monkeypatch.undo()
    again = list_models(["gpt4all"], gpt4all_roots=[root], header_cache=cache)
    assert not again[0].openable and "truncated" in again[0].reason
    cache.write_text("[[[[")  # a damaged cache is rebuilt
    assert list_models(["gpt4all"], gpt4all_roots=[root], header_cache=cache) == again


def test_header_verdicts_are_judged_again_under_another_transformers(tmp_path, monkeypatch):
    """Which architectures open depends on transformers: a verdict kept under one version is not reused
    under another (nor from the old, unversioned cache layout)."""
    root, cache = tmp_path / "g", tmp_path / "cache.json"
    write_gguf(root / "m.gguf")
    first = list_models(["gpt4all"], gpt4all_roots=[root], header_cache=cache)
    data = json.loads(cache.read_text())
    assert data["transformers"] == transformers_version() and len(data["entries"]) == 1
    key = next(iter(data["entries"]))
    data["entries"][key] = {**data["entries"][key], "ok": False, "reason": "kept verdict"}
    cache.write_text(json.dumps(data))
    kept = list_models(["gpt4all"], gpt4all_roots=[root], header_cache=cache)
    assert kept[0].reason == "kept verdict"  # the same version: the cache is what is read

    cache.write_text(json.dumps({**data, "transformers": "0.0.1"}))
    assert list_models(["gpt4all"], gpt4all_roots=[root], header_cache=cache) == first
    assert json.loads(cache.read_text())["transformers"] == transformers_version()
    cache.write_text(json.dumps(data["entries"]))  # the format-1 layout: a bare map of verdicts
    assert list_models(["gpt4all"], gpt4all_roots=[root], header_cache=cache) == first


# ---- the CLI ---------------------------------------------------------------------------------------------
@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    """Every default root inside tmp_path, with one model in LM Studio and one broken Ollama manifest."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("HF_HUB_CACHE", "HF_HOME", "OLLAMA_MODELS", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME",
                "ACTADD_LMSTUDIO_MODELS", "ACTADD_GPT4ALL_MODELS", "ACTADD_CONFIG_DIR", "ACTADD_CACHE"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    write_gguf(home / ".lmstudio" / "models" / "pub" / "repo" / "tiny.Q8_0.gguf")
    _manifest(home / ".ollama" / "models", ("registry.ollama.ai", "library", "bad", "1b"), "{")
    write_gguf(home / ".local" / "share" / "nomic.ai" / "GPT4All" / "g.gguf", "bert")
    return home


def test_cli_models_json_schema_and_exit_codes(fake_home, capsys):
    stores = ["--source", "lmstudio", "--source", "ollama", "--source", "gpt4all", "--source", "recent"]
    assert main(["models", "--json", *stores]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"models", "count"} and out["count"] == len(out["models"]) == 3
    for row in out["models"]:
        assert set(row) == ROW_KEYS
        assert isinstance(row["openable"], bool) and isinstance(row["size_bytes"], int)
        assert (row["reason"] is None) == row["openable"]
    rows = {r["name"]: r for r in out["models"]}
    assert rows["pub/repo/tiny.Q8_0"] | {"path": ""} == {
        "name": "pub/repo/tiny.Q8_0", "source": "lmstudio", "path": "", "format": "gguf", "architecture": "llama",
        "n_params": N_PARAMS, "quantization": "Q8_0", "size_bytes": rows["pub/repo/tiny.Q8_0"]["size_bytes"],
        "openable": True, "reason": None,
    }  # fmt: skip
    assert not rows["bad:1b"]["openable"] and "bert" in rows["g"]["reason"]
    assert (fake_home / ".cache" / "actadd-studio" / "gguf-headers.json").exists()

    assert main(["models", "list", "--openable", "--json", *stores]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)["models"]] == ["pub/repo/tiny.Q8_0"]

    assert main(["models", *stores]) == 0
    human = capsys.readouterr().out
    assert "pub/repo/tiny.Q8_0  [lmstudio]  llama  4K  Q8_0" in human and "can't open: " in human

    assert main(["models", "--source", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice: 'nowhere'" in err


def test_cli_models_with_nothing_found(fake_home, capsys, tmp_path):
    assert main(["models", "--source", "hf-cache"]) == 0
    assert capsys.readouterr().out.strip() == "no models found"
