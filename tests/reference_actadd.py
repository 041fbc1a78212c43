"""An independent reference implementation of ActAdd, written from the paper, for checking the engine.

It shares no code with `engine/`: it tokenizes with the tokenizer directly, reads resid_pre from
`output_hidden_states`, and decodes greedily without a KV cache, re-running the whole sequence each step
with `c * h` added at positions 0..n-1 (which is what the cached prompt-only addition computes).
"""

from __future__ import annotations

import torch


def reference_ids(tokenizer, text: str) -> list[int]:
    """Plain text begins as the model begins it: with BOS when the tokenizer puts one before this text
    itself (Llama, Gemma), or when BOS is the EOS document separator that it never adds (GPT-2, as in the
    paper); otherwise with the text alone (SmolLM2, Qwen2)."""
    plain = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is None:
        return plain
    own = list(tokenizer(text)["input_ids"])
    tokenizer_adds = len(own) > len(plain) and own[0] == bos
    if tokenizer_adds or bos == tokenizer.eos_token_id:
        return [bos, *plain]
    return plain


def reference_vector(model, tokenizer, positive: str, negative: str, layer: int) -> torch.Tensor:
    pos, neg = reference_ids(tokenizer, positive), reference_ids(tokenizer, negative)
    space = tokenizer(" ", add_special_tokens=False)["input_ids"][-1]
    n = max(len(pos), len(neg))
    pos, neg = pos + [space] * (n - len(pos)), neg + [space] * (n - len(neg))
    with torch.no_grad():
        hp = model(torch.tensor([pos]), output_hidden_states=True).hidden_states[layer][0]
        hn = model(torch.tensor([neg]), output_hidden_states=True).hidden_states[layer][0]
    return (hp - hn).float()  # [n, hidden]


def block_list(model):
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None:
            return obj
    raise AssertionError("no blocks")


def reference_greedy(
    model, tokenizer, prompt: str, vector: torch.Tensor | None, layer: int, coeff: float, steps: int
) -> list[int]:
    ids = reference_ids(tokenizer, prompt)
    block = block_list(model)[layer]

    def add(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        h = h.clone()
        n = vector.shape[0]
        h[:, :n] += coeff * vector.to(h.dtype)
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    handle = block.register_forward_pre_hook(add, with_kwargs=True) if vector is not None else None
    out: list[int] = []
    try:
        with torch.no_grad():
            for _ in range(steps):
                logits = model(torch.tensor([ids + out]), use_cache=False).logits[0, -1]
                out.append(int(logits.argmax()))
    finally:
        if handle is not None:
            handle.remove()
    return out
