"""`generate --chat [--system TEXT]`: the Chat tab's rendering and front alignment, from the command line."""

from __future__ import annotations

import json

import pytest
from tiny_models import CHATML_TEMPLATE, REWRITING_TEMPLATE, build_tiny_chat_model
from transformers import AutoTokenizer

from engine.chat import ChatTurn, render_chat
from engine.cli import main

MESSAGE = "I love weddings and the bride"


@pytest.fixture(scope="module")
def chat_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-cli")
    return {
        "chatml": build_tiny_chat_model("chat-bos", CHATML_TEMPLATE, root / "chatml"),
        "rewriting": build_tiny_chat_model("chat-bos", REWRITING_TEMPLATE, root / "rewriting"),
    }


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def capture(capsys, model: str, lib: str) -> None:
    code, _, err = run(
        capsys, "capture", "--model", model, "--positive", "Love", "--negative", "Hate", "--layer", "1",
        "--name", "love-hate", "--library", lib,
    )  # fmt: skip
    assert code == 0, err


def generate(capsys, model: str, lib: str, *extra: str) -> tuple[int, str, str]:
    return run(
        capsys, "generate", "--model", model, "--prompt", MESSAGE, "--steer", "love-hate:4",
        "--max-new-tokens", "5", "--temperature", "0", "--library", lib, *extra,
    )  # fmt: skip


def test_generate_chat_with_a_system_prompt(chat_dirs, tmp_path, capsys):
    model, lib = str(chat_dirs["chatml"]), str(tmp_path / "lib")
    capture(capsys, model, lib)
    code, out, err = generate(capsys, model, lib, "--chat", "--system", "You talk about food.", "--json")
    assert code == 0, err
    payload = json.loads(out)
    rendered = render_chat(
        AutoTokenizer.from_pretrained(model), "You talk about food.", [ChatTurn("user", MESSAGE)]
    )
    assert payload["prompt_token_ids"] == rendered.ids
    assert payload["chat_front_offset"] == rendered.front_offset is not None
    assert payload["steering"][0]["mode"] == "front"

    code, out, err = generate(capsys, model, lib, "--chat", "--system", "You talk about food.")
    assert code == 0, err
    assert out.rstrip("\n") == payload["text"]  # the answer alone, not glued to the message


def test_system_needs_chat(chat_dirs, tmp_path, capsys):
    code, _, err = generate(capsys, str(chat_dirs["chatml"]), str(tmp_path / "lib"), "--system", "Hi")
    assert code == 2 and "--system needs --chat" in err


def test_chat_on_a_model_without_a_template(model_dirs, tmp_path, capsys):
    model, lib = str(model_dirs["gpt2"]), str(tmp_path / "lib")
    capture(capsys, model, lib)
    code, _, err = generate(capsys, model, lib, "--chat")
    assert code == 2 and "no chat template" in err


def test_front_mode_refused_when_the_message_cannot_be_located(chat_dirs, tmp_path, capsys):
    model, lib = str(chat_dirs["rewriting"]), str(tmp_path / "lib")
    capture(capsys, model, lib)
    code, _, err = generate(capsys, model, lib, "--chat")
    assert code == 2 and "use mode all" in err
    code, _, err = generate(capsys, model, lib, "--chat", "--mode", "all")
    assert code == 0, err
