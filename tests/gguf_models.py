"""Small GGUF files written with the `gguf` package, for the GGUF-opening tests and the benchmark.

The tokenizer is the tiny byte-level BPE of tiny_models (GPT-2 style, stored as `tokenizer.ggml.model =
gpt2`); the weights are random, quantized with `gguf.quants` (or, for the benchmark's big shapes, random
bytes of the right block size: the data need not mean anything to measure memory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q


@dataclass(frozen=True)
class Shape:
    vocab: int = 0  # 0: the tiny tokenizer's size
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 128
    context: int = 128


def _tokenizer_fields(writer: gguf.GGUFWriter, vocab: int, bos_added: bool) -> int:
    """Write the tiny BPE tokenizer (padded with filler tokens up to `vocab`); return its size."""
    from tiny_models import train_tokenizer

    state = json.loads(train_tokenizer(adds_bos=False).backend_tokenizer.to_str())
    by_id = sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in by_id]
    tokens += [f"<filler{i}>" for i in range(max(0, vocab - len(tokens)))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    token_types = [gguf.TokenType.CONTROL if t == "<|endoftext|>" else gguf.TokenType.NORMAL for t in tokens]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    eot = tokens.index("<|endoftext|>")
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(eot)
    writer.add_add_bos_token(bos_added)
    return len(tokens)


def _add(
    writer: gguf.GGUFWriter, name: str, shape: tuple[int, ...], qtype: Q, rng, random_bytes: bool
) -> None:
    """Add one tensor of numpy shape `shape` (HF's [out, in] order), stored as `qtype`."""
    if qtype in (Q.F32, Q.F16) or len(shape) == 1:
        data = rng.standard_normal(shape).astype(np.float32) * 0.1 + (1.0 if "norm.weight" in name else 0.0)
        writer.add_tensor(name, data.astype(np.float16) if qtype == Q.F16 and len(shape) > 1 else data)
        return
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if random_bytes:  # a valid layout with meaningless values: fast, for memory benchmarks
        n_bytes = shape[-1] // block * type_size
        raw = rng.integers(0, 256, size=(*shape[:-1], n_bytes), dtype=np.uint8)
        if qtype == Q.Q8_0:  # keep the f16 scales finite: zero their high byte's exponent bits
            raw.reshape(-1, type_size)[:, 1] &= 0x3B
        elif qtype == Q.Q4_K:
            raw.reshape(-1, type_size)[:, 1] &= 0x3B
            raw.reshape(-1, type_size)[:, 3] &= 0x3B
        writer.add_tensor(name, raw, raw_dtype=qtype)
        return
    data = rng.standard_normal(shape).astype(np.float32) * 0.15
    writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def write_gguf(
    path: Path,
    arch: str = "llama",
    shape: Shape = Shape(),
    qtype: Q = Q.Q8_0,
    *,
    tied: bool = False,
    seed: int = 0,
    random_bytes: bool = False,
    extra: dict | None = None,
    general_type: str | None = None,
) -> Path:
    """A loadable GGUF of `arch` (llama, qwen2 or gpt2) with random weights."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    if general_type is not None:
        writer.add_type(general_type)
    writer.add_name(f"tiny-{arch}")
    vocab = _tokenizer_fields(writer, shape.vocab, bos_added=arch == "llama")
    h, f = shape.hidden, shape.ffn
    writer.add_context_length(shape.context)
    writer.add_embedding_length(h)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(4 * h if arch == "gpt2" else f)
    writer.add_head_count(shape.heads)
    for key, value in (extra or {}).items():
        writer.add_key_value(key, value[0], value[1])

    def add(name: str, dims: tuple[int, ...]) -> None:
        _add(writer, name, dims, qtype, rng, random_bytes)

    if arch == "gpt2":
        # transformers maps neither n_positions nor n_inner from a GPT-2 GGUF: they stay 1024 and 4 * hidden
        f = 4 * h
        writer.add_layer_norm_eps(1e-5)
        add("token_embd.weight", (vocab, h))
        _add(writer, "position_embd.weight", (1024, h), Q.F32, rng, False)
        for i in range(shape.layers):
            for norm in ("attn_norm", "ffn_norm"):
                add(f"blk.{i}.{norm}.weight", (h,))
                add(f"blk.{i}.{norm}.bias", (h,))
            for name, dims in (
                ("attn_qkv", (3 * h, h)),
                ("attn_output", (h, h)),
                ("ffn_up", (f, h)),
                ("ffn_down", (h, f)),
            ):
                add(f"blk.{i}.{name}.weight", dims)
                add(f"blk.{i}.{name}.bias", (dims[0],))
        add("output_norm.weight", (h,))
        add("output_norm.bias", (h,))
    else:
        head_dim = h // shape.heads
        kv = shape.kv_heads * head_dim
        writer.add_head_count_kv(shape.kv_heads)
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_rope_freq_base(10000.0)
        add("token_embd.weight", (vocab, h))
        for i in range(shape.layers):
            add(f"blk.{i}.attn_norm.weight", (h,))
            add(f"blk.{i}.ffn_norm.weight", (h,))
            for name, dims in (
                ("attn_q", (h, h)),
                ("attn_k", (kv, h)),
                ("attn_v", (kv, h)),
                ("attn_output", (h, h)),
                ("ffn_gate", (f, h)),
                ("ffn_up", (f, h)),
                ("ffn_down", (h, f)),
            ):
                add(f"blk.{i}.{name}.weight", dims)
                if arch == "qwen2" and name in ("attn_q", "attn_k", "attn_v"):
                    add(f"blk.{i}.{name}.bias", (dims[0],))
        add("output_norm.weight", (h,))
    if not tied:
        add("output.weight", (vocab, h))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_metadata_only(path: Path, arch: str, fields: dict[str, tuple], tensor: bool = True) -> Path:
    """A GGUF whose header says what kind of file it is (an adapter, a projector...), with one small tensor."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, (value, vtype) in fields.items():
        writer.add_key_value(key, value, vtype)
    if tensor:
        writer.add_tensor("dummy.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
