"""Tiny random-init causal LMs of many architectures, saved with `save_pretrained` for the real load path.

The tokenizer is a byte-level BPE trained on the spot with `tokenizers`. Two flavours exercise the one-BOS
rule: a GPT-2-style one that never adds BOS, and a Llama-style one whose post-processor adds it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "Love is patient and kind. I love weddings, the bride and the groom.",
    "Hate is a strong word. I hate rain and cold weather on a long trip.",
    "The team won the match; sports fans cheered in the stadium.",
    "We ate pasta and bread, the food was warm and the soup was good.",
    "Travel by train to the coast, the weather was sunny and calm.",
    "I went up to my friend and said hello. Anger and calm are moods.",
    "Intent to praise, intent to hurt. I talk about weddings constantly.",
] * 20

BOS = "<|endoftext|>"

# model_type -> config overrides for a tiny model (hidden 64, 2-4 layers)
ARCHITECTURES: dict[str, dict] = {
    "gpt2": {"n_embd": 64, "n_layer": 3, "n_head": 4, "n_positions": 128},
    "llama": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    },
    "qwen2": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    },
    "mistral": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "head_dim": 16,
    },
    "gemma": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "max_position_embeddings": 128,
    },
    "gpt_neox": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
    },
    "opt": {
        "hidden_size": 64,
        "ffn_dim": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
        "word_embed_proj_dim": 64,
    },
    "phi": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
    },
    "gptj": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128, "rotary_dim": 8},
    "falcon": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "new_decoder_architecture": False,
        "multi_query": True,
    },
    "mixtral": {
        "hidden_size": 64,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 128,
        "head_dim": 16,
    },
    "stablelm": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    },
    "qwen3": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 128,
    },
    "gemma2": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 128,
        "sliding_window": 16,
    },
    "gemma3_text": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 128,
        "sliding_window": 16,
    },
    "phi3": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    },
}
# Tokenizers that add BOS themselves, as Llama's and Gemma's do.
ADDS_BOS = {"llama", "gemma", "mistral"}


def train_tokenizer(adds_bos: bool) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if adds_bos:
        bos_id = tok.token_to_id(BOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=BOS, unk_token=BOS, pad_token=BOS
    )


def build_tiny_model(model_type: str, folder: Path, seed: int = 0) -> Path:
    """Create, randomly initialise and save a tiny model of `model_type` into `folder`."""
    tokenizer = train_tokenizer(adds_bos=model_type in ADDS_BOS)
    overrides = dict(ARCHITECTURES[model_type])
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Random init gives nearly uniform logits; scale up so greedy decoding has clear winners.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_qwen2_without_endoftext(folder: Path, vocab_rows: int | None = None) -> Path:
    """A tiny qwen2 folder whose tokenizer lacks `<|endoftext|>` (bos `<|im_start|>`, eos `<|im_end|>`).

    Loading it, transformers' `Qwen2Tokenizer` adds `<|endoftext|>` as unk, one past the embedding rows
    (real-models.md's quirk). `vocab_rows` smaller than the base vocabulary makes a genuinely broken folder.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=vocab_rows or len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **ARCHITECTURES["qwen2"],
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# The three ways plain text begins (engine/tokens.py::bos_rule), as tokenizers of each kind:
# - "adds-bos": Llama-like, BOS `<s>` differs from EOS `</s>` and the post-processor adds it;
# - "bos-is-eos": GPT-2-like, `<|endoftext|>` is both and is never added;
# - "chat-bos": SmolLM2-like, BOS is the chat marker `<|im_start|>`, EOS `<|im_end|>`, neither added.
TOKENIZER_KINDS = ("adds-bos", "bos-is-eos", "chat-bos")


def train_tokenizer_kind(kind: str) -> PreTrainedTokenizerFast:
    bos, eos = {
        "adds-bos": ("<s>", "</s>"),
        "bos-is-eos": (BOS, BOS),
        "chat-bos": ("<|im_start|>", "<|im_end|>"),
    }[kind]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(dict.fromkeys([bos, eos])),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if kind == "adds-bos":
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos)


def build_tiny_llama_with_tokenizer(kind: str, folder: Path, seed: int = 0) -> Path:
    """A tiny llama folder whose tokenizer is of `kind` (one of TOKENIZER_KINDS)."""
    tokenizer = train_tokenizer_kind(kind)
    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **ARCHITECTURES["llama"],
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# Chat templates for the chat tests (engine/chat.py). CHATML is SmolLM2's shape, default system prompt
# included; BOS_TEMPLATE renders `{{ bos_token }}` itself, as Llama's and Gemma's do; REWRITING changes the
# user's words (upper case), so the start of the message cannot be located.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
BOS_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ message['role'] + ': ' + message['content'] | trim + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)
REWRITING_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] | upper + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


def build_tiny_chat_model(kind: str, template: str, folder: Path, seed: int = 0) -> Path:
    """A tiny llama folder (tokenizer of `kind`, see TOKENIZER_KINDS) whose tokenizer has `template`."""
    from transformers import AutoTokenizer

    build_tiny_llama_with_tokenizer(kind, folder, seed)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return folder
