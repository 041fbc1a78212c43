"""Small GGUF files written with the `gguf` package, for the model-listing and openability tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

TOKENS = ["<s>", "</s>", *[f"tok{i}" for i in range(62)]]


def write_gguf(
    path: Path,
    arch: str = "llama",
    *,
    name: str = "Tiny Test",
    file_type: gguf.LlamaFileType | None = gguf.LlamaFileType.MOSTLY_Q8_0,
    kv: dict | None = None,
    tensors: bool = True,
) -> Path:
    """A GGUF with an f32 embedding, one Q8_0 matrix and a string-array vocabulary (headers as llama.cpp's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name)
    if file_type is not None:
        writer.add_file_type(int(file_type))
    writer.add_block_count(1)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(TOKENS)
    writer.add_token_scores([0.0] * len(TOKENS))
    for key, value in (kv or {}).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, value)
    if tensors:
        rng = np.random.default_rng(0)
        writer.add_tensor("token_embd.weight", rng.standard_normal((64, 32), dtype=np.float32))
        matrix = rng.standard_normal((32, 64), dtype=np.float32)
        quantized = gguf.quants.quantize(matrix, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(
            "blk.0.attn_q.weight",
            quantized,
            raw_shape=quantized.shape,
            raw_dtype=gguf.GGMLQuantizationType.Q8_0,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


N_PARAMS = 64 * 32 + 32 * 64
