"""A tokenizer longer than the embedding is refused only when ordinary text can reach the missing rows."""

from __future__ import annotations

import logging

import pytest
from tiny_models import build_qwen2_without_endoftext

from engine import InvalidInputError, ModelLoadError, SamplingConfig, capture_actadd, generate, load_model
from engine.vocab_check import vocab_fit


def test_qwen2_tokenizer_without_endoftext_loads_warns_once_and_generates(tmp_path, caplog):
    folder = build_qwen2_without_endoftext(tmp_path / "qwen2-quirk")
    with caplog.at_level(logging.WARNING, logger="engine.vocab_check"):
        loaded = load_model(folder, device="cpu")
        load_model(folder, device="cpu")  # a second load of the same folder does not warn again
    rows = loaded.model.get_input_embeddings().weight.shape[0]
    assert len(loaded.tokenizer) == rows + 1  # the quirk really happened
    assert loaded.tokenizer.unk_token == "<|endoftext|>"
    warned = [r.getMessage() for r in caplog.records if r.name == "engine.vocab_check"]
    assert len(warned) == 1 and "<|endoftext|> (id 400)" in warned[0]
    out = generate(loaded, "I love weddings", None, SamplingConfig(temperature=0, max_new_tokens=4))
    assert len(out.rows[0].token_ids) == 4
    assert max(out.rows[0].prompt_token_ids) < rows
    # Typing the missing token literally is refused with a message, not an index error in the embedding.
    with pytest.raises(
        InvalidInputError, match=r"contains '<\|endoftext\|>', a token this model has no embedding"
    ):
        generate(loaded, "I love <|endoftext|> weddings", None, SamplingConfig(max_new_tokens=1))
    with pytest.raises(InvalidInputError, match="no embedding"):
        capture_actadd(loaded, "Love<|endoftext|>", "Hate", 1)


def test_vocab_fit_names_the_largest_id_ordinary_text_reaches(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_qwen2_without_endoftext(tmp_path / "q"))
    fit = vocab_fit(tok)
    assert fit.max_text_id == 399
    assert fit.unused_out_of_range == {400: "<|endoftext|>"}


def test_an_embedding_smaller_than_the_base_vocabulary_is_refused(tmp_path):
    folder = build_qwen2_without_endoftext(tmp_path / "broken", vocab_rows=300)
    with pytest.raises(ModelLoadError, match=r"401 tokens.*300 rows.*ordinary text encodes to id 399"):
        load_model(folder, device="cpu")
