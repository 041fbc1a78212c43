"""Write a plain float32 Hugging Face folder from a GGUF file (for the real-model replication).

    python scripts/dequantize_gguf.py /tmp/models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/models/smollm2-folder
    python scripts/dequantize_gguf.py /tmp/models/gemma-3-270m-q4_k_m.gguf /tmp/models/gemma3-folder

transformers dequantizes GGUF on load but refuses to save such a model ("quantized with gguf and is not
serializable"); dropping the quantizer and its config makes it a plain float32 model. Written to a
temporary folder and renamed, so a killed run never leaves a half folder; an existing folder is kept.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(source: str, target: str) -> int:
    src, dst = Path(source), Path(target)
    if (dst / "config.json").exists():
        print(f"{dst} exists; nothing to do")
        return 0
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(dst)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: dequantize_gguf.py FILE.gguf OUT_FOLDER")
    sys.exit(main(sys.argv[1], sys.argv[2]))
