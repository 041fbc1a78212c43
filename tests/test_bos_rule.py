"""Plain text begins the way the model begins it: BOS added by the tokenizer, BOS = EOS, or nothing.

Checked against the independent reference (`reference_actadd.reference_ids`) on tokenizers of each kind,
end to end through capture and greedy steering.
"""

from __future__ import annotations

import json

import pytest
import torch
from reference_actadd import reference_greedy, reference_ids, reference_vector
from tiny_models import TOKENIZER_KINDS, build_tiny_llama_with_tokenizer, train_tokenizer_kind

from engine import (
    SamplingConfig,
    Steer,
    align_pair,
    alignment_preview,
    capture_actadd,
    capture_mean_diff,
    encode,
    generate,
    load_model,
)
from engine.cli import main
from engine.generation import prompt_ids
from engine.library import Library
from engine.tokens import bos_rule, legacy_bos_warning

EXPECTED_RULE = {"adds-bos": "tokenizer-adds", "bos-is-eos": "bos-is-eos", "chat-bos": "none"}
TEXTS = ["Love", " weddings", "I went up to my friend and said", "Hate is a strong word."]
GREEDY = SamplingConfig(temperature=0, max_new_tokens=6)


@pytest.fixture(scope="module")
def kind_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bos-kinds")

    class _Lazy(dict):
        def __missing__(self, kind: str):
            self[kind] = load_model(build_tiny_llama_with_tokenizer(kind, root / kind), device="cpu")
            return self[kind]

    return _Lazy()


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_rule_and_ids_match_the_reference_on_each_kind_of_tokenizer(kind):
    tok = train_tokenizer_kind(kind)
    rule = bos_rule(tok)
    assert rule.rule == EXPECTED_RULE[kind]
    assert rule.prepends == (kind != "chat-bos")
    for text in TEXTS:
        ids = encode(tok, text)
        assert ids == reference_ids(tok, text), (kind, text)
        assert ids.count(tok.bos_token_id) == (1 if rule.prepends else 0)


@pytest.mark.parametrize("kind", ["adds-bos", "bos-is-eos"])
def test_bos_is_never_doubled_even_when_the_text_spells_it(kind):
    tok = train_tokenizer_kind(kind)
    ids = encode(tok, tok.bos_token + tok.bos_token + "Love")
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id


def test_a_tokenizer_without_bos_gets_nothing():
    tok = train_tokenizer_kind("chat-bos")
    tok.bos_token = None
    assert bos_rule(tok).rule == "none" and encode(tok, "Love") == tok("Love")["input_ids"]


def test_the_demo_model_prepends_its_endoftext_like_gpt2():
    from transformers import AutoTokenizer

    from engine.models import DEMO_MODEL_DIR

    tok = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    assert bos_rule(tok).rule == "bos-is-eos" and encode(tok, "Love")[0] == tok.bos_token_id


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_capture_prompt_and_steering_match_the_reference(kind_models, kind):
    loaded = kind_models[kind]
    tok, layer, coeff = loaded.tokenizer, 1, 6.0
    prompt = "I went up to my friend and said"
    vector = capture_actadd(loaded, "Love", "Hate weddings", layer)
    expected = reference_vector(loaded.model, tok, "Love", "Hate weddings", layer)
    torch.testing.assert_close(vector.layers[layer], expected, rtol=1e-4, atol=1e-4)
    # With a BOS, position 0 is shared and exactly zero; without one it is the first word's difference.
    assert torch.equal(vector.layers[layer][0], torch.zeros(64)) == (kind != "chat-bos")
    assert vector.provenance["bos_rule"] == EXPECTED_RULE[kind]
    assert vector.provenance["bos_prepended"] == (kind != "chat-bos")
    assert prompt_ids(loaded, prompt) == reference_ids(tok, prompt)
    ours = generate(loaded, prompt, [[Steer(vector, coeff)]], GREEDY).rows[0].token_ids
    assert ours == reference_greedy(loaded.model, tok, prompt, expected, layer, coeff, len(ours))
    # The alignment preview shows the same start as the capture.
    preview = alignment_preview(tok, "Love", "Hate weddings")
    assert [r.positive for r in preview] == tok.convert_ids_to_tokens(
        align_pair(tok, "Love", "Hate weddings").positive
    )
    assert (preview[0].positive == tok.bos_token) == (kind != "chat-bos")


def test_mean_diff_records_the_rule_too(kind_models):
    from engine import PromptPair

    vector = capture_mean_diff(kind_models["chat-bos"], [PromptPair("Love", "Hate")], [1])
    assert vector.provenance["bos_rule"] == "none" and vector.provenance["bos_prepended"] is False


def _legacy(vector, tok):
    """The vector as the old rule made it: BOS prepended, no rule recorded."""
    provenance = {k: v for k, v in vector.provenance.items() if k not in ("bos_rule", "bos_prepended")}
    provenance["positive_ids"] = [tok.bos_token_id, *provenance["positive_ids"]]
    return vector.replace(provenance=provenance, name="old-love")


def test_a_vector_captured_under_the_old_rule_warns_where_nothing_is_prepended_now(kind_models):
    chat = kind_models["chat-bos"]
    vector = capture_actadd(chat, "Love", "Hate", 1, name="new-love")
    assert legacy_bos_warning(vector, chat.tokenizer) is None  # captured under the rule: fine
    old = _legacy(vector, chat.tokenizer)
    warning = legacy_bos_warning(old, chat.tokenizer)
    assert warning and "'<|im_start|>'" in warning and "position 0 is no longer a shared BOS" in warning
    # A vector without any ids recorded is judged by the tokenizer having a BOS.
    bare = old.replace(provenance={})
    assert legacy_bos_warning(bare, chat.tokenizer) == warning
    # Where the rule still prepends a BOS, an old vector is just as it was.
    gpt2_like = kind_models["bos-is-eos"]
    old_gpt2 = _legacy(capture_actadd(gpt2_like, "Love", "Hate", 1), gpt2_like.tokenizer)
    assert legacy_bos_warning(old_gpt2, gpt2_like.tokenizer) is None
    # Directions have no position 0 to speak of.
    assert legacy_bos_warning(old.to_direction(), chat.tokenizer) is None


def test_cli_generate_reports_the_old_rule_warning(kind_models, tmp_path, capsys):
    chat = kind_models["chat-bos"]
    library = Library(tmp_path / "lib")
    library.save(_legacy(capture_actadd(chat, "Love", "Hate", 1), chat.tokenizer), "old-love")
    code = main(
        ["generate", "--model", chat.info.path, "--prompt", "I went up to my friend", "--steer", "old-love:2",
         "--max-new-tokens", "2", "--library", str(tmp_path / "lib"), "--json", "--device", "cpu"]
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert any("no longer a shared BOS" in w for w in out["warnings"])
