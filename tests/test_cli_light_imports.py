"""`python main.py models` and `--help` import neither torch nor transformers once transformers' tables are kept.

Run in fresh processes (the test process has both imported already), with every store inside tmp_path: an
LM Studio GGUF, a GGUF of an architecture transformers can't read, a Hugging Face cache folder and a broken
Ollama manifest, so that each of transformers' tables takes part in the verdicts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gguf_files import write_gguf
from test_model_store import _hf_repo, _manifest

from engine import transformers_tables as tt

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers")
# Runs main.py's main() as `python main.py ARGS...` would, then writes the heavy modules it imported.
WRAPPER = """
import json, sys
sys.path.insert(0, {root!r})
import main
try:
    code = main.main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
open(sys.argv[1], "w").write(json.dumps(heavy))
sys.exit(code)
"""


@pytest.fixture
def store(tmp_path, model_dirs):
    home = tmp_path / "home"
    write_gguf(home / ".lmstudio" / "models" / "pub" / "repo" / "tiny.Q8_0.gguf")
    write_gguf(home / ".local" / "share" / "nomic.ai" / "GPT4All" / "bert.gguf", "bert")
    _manifest(home / ".ollama" / "models", ("registry.ollama.ai", "library", "bad", "1b"), "{")
    gpt2 = model_dirs["gpt2"]
    files = {f.name: f.read_bytes() for f in gpt2.iterdir() if f.is_file()}
    _hf_repo(home / ".cache" / "huggingface" / "hub", "org/gpt2-tiny", files)
    _hf_repo(
        home / ".cache" / "huggingface" / "hub", "org/unknown", {"config.json": b'{"model_type": "nope"}'}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XDG_", "ACTADD_", "OLLAMA_"))}
    env |= {
        "HOME": str(home),
        "ACTADD_CACHE": str(tmp_path / "cache"),
        "ACTADD_CONFIG_DIR": str(tmp_path / "cfg"),
    }
    return env, tmp_path / "cache"


def run_cli(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    report = tmp_path / "heavy.json"
    code = WRAPPER.format(root=str(ROOT), heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code, str(report), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done, json.loads(report.read_text())


def models_json(done: subprocess.CompletedProcess) -> list[dict]:
    # Only the fake stores: packages installed on the machine may ship .gguf files of their own.
    return [r for r in json.loads(done.stdout)["models"] if r["source"] != "python-package"]


def test_models_imports_neither_torch_nor_transformers_once_the_tables_are_kept(store, tmp_path):
    env, cache = store
    cold, heavy = run_cli(env, tmp_path, "models", "--json")
    assert "transformers" in heavy  # the first listing reads the tables from transformers itself
    kept = json.loads((cache / tt.CACHE_NAME).read_text())
    assert kept["transformers"] == tt.transformers_version()
    rows = models_json(cold)
    verdicts = {r["name"]: (r["openable"], r["reason"]) for r in rows}
    assert verdicts["pub/repo/tiny.Q8_0"] == (True, None) and verdicts["org/gpt2-tiny"] == (True, None)
    assert "'bert', which transformers can't read from GGUF; supported: " in verdicts["bert"][1]
    assert "architecture 'nope' is unknown to transformers" in verdicts["org/unknown"][1]
    assert not verdicts["bad:1b"][0]

    (cache / "gguf-headers.json").unlink()  # every header judged again, with the kept tables
    again, heavy = run_cli(env, tmp_path, "models", "--json")
    assert heavy == [] and models_json(again) == rows
    warm, heavy = run_cli(env, tmp_path, "models", "--json")
    assert heavy == [] and models_json(warm) == rows
    human, heavy = run_cli(env, tmp_path, "models")
    assert heavy == [] and "pub/repo/tiny.Q8_0  [lmstudio]  llama" in human.stdout


@pytest.mark.parametrize("args", [["--help"], ["models", "--help"], ["generate", "--help"]])
def test_help_imports_neither_torch_nor_transformers(store, tmp_path, args):
    env, _ = store
    done, heavy = run_cli(env, tmp_path, *args)
    assert heavy == [] and "usage: actadd" in done.stdout


def test_the_app_help_lists_every_headless_command(store, tmp_path):
    """`python main.py --help` is the GUI's parser; it names the CLI's commands, which are main.py's
    dispatch list and exactly the CLI parser's subcommands."""
    import argparse

    from engine.cli import COMMANDS, build_parser

    parsers = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(parsers[0].choices) == sorted(COMMANDS)
    env, _ = store
    done, _ = run_cli(env, tmp_path, "--help")
    assert "--model PATH" in done.stdout and ", ".join(COMMANDS) in done.stdout


def test_a_bad_device_is_refused_after_asking_torch(store, tmp_path):
    env, _ = store
    done = subprocess.run(
        [sys.executable, "main.py", "generate", "--prompt", "x", "--device", "tpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: actadd generate: argument --device: invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda')"
    )


# ---- the kept tables, in process ---------------------------------------------------------------------------
@pytest.fixture
def fresh_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTADD_CACHE", str(tmp_path / "cache"))
    tt.transformers_tables.cache_clear()
    yield tmp_path / "cache" / tt.CACHE_NAME
    tt.transformers_tables.cache_clear()


def test_the_kept_tables_are_transformers_own(fresh_tables):
    from transformers import CONFIG_MAPPING
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    tables = tt.transformers_tables()
    assert tables == tt.read_from_transformers()
    assert {"llama", "qwen2", "gemma3", "gpt2"} <= set(tables.gguf_architectures) <= set(GGUF_CONFIG_MAPPING)
    assert tables.model_types == set(CONFIG_MAPPING.keys()) and "llama" in tables.causal_lm_types
    tt.transformers_tables.cache_clear()
    assert fresh_tables.exists() and tt._read_cache(tt.transformers_version()) == tables


@pytest.mark.parametrize(
    "kept",
    [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"format": tt.FORMAT, "transformers": "0.0.1", "gguf": ["x"], "model_types": [], "causal_lm_types": []}),
        json.dumps({"format": tt.FORMAT, "transformers": "VERSION", "gguf": "llama", "model_types": [], "causal_lm_types": []}),
        json.dumps({"format": 0, "transformers": "VERSION", "gguf": ["x"], "model_types": [], "causal_lm_types": []}),
    ],
    ids=["damaged", "not-an-object", "other-version", "bad-list", "old-format"],
)  # fmt: skip
def test_a_stale_or_damaged_copy_is_read_again_from_transformers(fresh_tables, kept):
    fresh_tables.parent.mkdir(parents=True)
    fresh_tables.write_text(kept.replace("VERSION", tt.transformers_version() or ""))
    assert tt.transformers_tables() == tt.read_from_transformers()
    assert json.loads(fresh_tables.read_text())["transformers"] == tt.transformers_version()  # rewritten


def test_an_unwritable_cache_only_costs_the_import(fresh_tables, monkeypatch):
    fresh_tables.parent.parent.mkdir(parents=True, exist_ok=True)
    fresh_tables.parent.write_text("a file where the cache folder should be")
    assert tt.transformers_tables() == tt.read_from_transformers()


def test_without_transformers_metadata_the_tables_come_from_transformers(fresh_tables, monkeypatch):
    monkeypatch.setattr(tt, "transformers_version", lambda: None)
    assert tt.transformers_tables() == tt.read_from_transformers() and not fresh_tables.exists()


# ---- the lazy package ------------------------------------------------------------------------------------
def test_every_public_name_is_importable_from_the_package():
    import engine

    for name in engine.__all__:
        assert getattr(engine, name) is not None
    assert set(engine.__all__) <= set(dir(engine))
    with pytest.raises(ImportError):
        exec("from engine import no_such_name")
    with pytest.raises(AttributeError, match="no_such_name"):
        engine.no_such_name  # noqa: B018


def test_the_cli_silences_transformers_progress_bars_without_importing_it(monkeypatch, capsys):
    from transformers.utils import logging as hf_logging

    from engine.cli import main

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    hf_logging.enable_progress_bar()
    assert main(["models", "--help"]) == 0
    assert not hf_logging.is_progress_bar_enabled()  # already imported here: told directly
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # read by a transformers imported later
