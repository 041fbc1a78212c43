"""Bound a GGUF file's key-value section before `gguf.GGUFReader` reads it (control-vector imports).

gguf's reader builds several numpy views and Python objects for every key-value entry and array item
before anything can be checked: a 24 MB file holding an array of 3 million empty strings takes minutes
and gigabytes. A control vector has a handful of keys and no big arrays, so the counts are bounded
first by walking the key-value section without building anything.
"""

from __future__ import annotations

import struct
from pathlib import Path

from engine.errors import VectorFileError
from engine.vector import MAX_LAYER_INDEX

MAX_GGUF_KEYS = 1024
MAX_GGUF_ARRAY_ITEMS = 65536  # over all arrays
_GGUF_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUFValueType
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def prescan_gguf(path: Path) -> None:
    """Refuse a GGUF file whose key-value section or tensor count is far larger than a control vector's."""
    size = path.stat().st_size

    def bad(why: str) -> VectorFileError:
        return VectorFileError(f"{path.name}: malformed GGUF ({why})")

    with path.open("rb") as handle:

        def read(fmt: str) -> tuple:
            raw = handle.read(struct.calcsize(fmt))
            if len(raw) != struct.calcsize(fmt):
                raise bad("truncated key-value section")
            return struct.unpack(fmt, raw)

        def skip_string() -> None:
            (length,) = read(order + "Q")
            if length > size:
                raise bad("a string longer than the file")
            handle.seek(length, 1)

        handle.seek(4)
        (version,) = read("<I")
        order = ">" if version & 0xFFFF == 0 else "<"  # a file written on a big-endian machine
        n_tensors, n_keys = read(order + "QQ")
        if n_tensors > MAX_LAYER_INDEX or n_keys > MAX_GGUF_KEYS:
            raise bad(f"{n_tensors} tensors and {n_keys} keys; a control vector has a few of each")
        items = 0
        for _ in range(n_keys):
            skip_string()
            (value_type,) = read(order + "I")
            if value_type == _GGUF_ARRAY:
                item_type, count = read(order + "IQ")
                items += count
                if items > MAX_GGUF_ARRAY_ITEMS:
                    raise bad(f"arrays of more than {MAX_GGUF_ARRAY_ITEMS} items")
                if item_type == _GGUF_STRING:
                    for _ in range(count):
                        skip_string()
                elif item_type in _GGUF_SCALAR_BYTES:
                    handle.seek(count * _GGUF_SCALAR_BYTES[item_type], 1)
                else:
                    raise bad(f"an array of value type {item_type}")
            elif value_type == _GGUF_STRING:
                skip_string()
            elif value_type in _GGUF_SCALAR_BYTES:
                handle.seek(_GGUF_SCALAR_BYTES[value_type], 1)
            else:
                raise bad(f"value type {value_type}")
