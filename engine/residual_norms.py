"""The typical size of the residual stream at each layer, measured once per model and cached on disk.

A raw coefficient means nothing across models: the Love-Hate vector at layer 6 has a norm of 806 on
SmolLM2-135M and about 3,360 on Gemma-3-270M, while ordinary tokens' residuals at SmolLM2's layer 6 are
about 90. Normalised strengths (`engine.strength`) are expressed against the number measured here.

The measurement: resid_pre (the input of decoder block `l`, where steering adds) for a fixed, neutral
English text, read with the capture recorder in one forward pass. The typical norm at layer `l` is the
median over tokens of the per-token L2 norm `||h_l[t]||`. Position 0 and BOS/special tokens are left
out: the first position is an attention sink whose norm is several times the rest on real models
(SmolLM2's first token: ~626, ordinary tokens ~90), and the median ignores the few other outliers.

The result depends on the weights, so it is cached per model fingerprint in the app's cache folder
(`default_cache_dir`), in a file `residual-norms/<fingerprint id>.json`. Within that file each
measurement is keyed by what else can change it: the weights files (name, size, mtime), the
quantization, the dtype and the text. Writes are atomic; an unreadable cache file is measured again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from engine import app_dirs
from engine.architectures import context_limit
from engine.atomic import atomic_write_text
from engine.capture import resid_pre
from engine.errors import InvalidInputError
from engine.fingerprint import ModelFingerprint
from engine.models import LoadedModel
from engine.tokens import encode

CACHE_FORMAT = 1
MAX_TOKENS = 256  # enough positions for a stable median, cheap on any model
MIN_TOKENS = 8  # fewer measured positions than this is refused rather than trusted
MAX_VARIANTS = 8  # measurements kept per fingerprint (quantizations, dtypes, re-saved weights)
MAX_CACHE_BYTES = 1024**2

# Plain, emotionally flat prose about nothing in particular: no topic a steering vector is likely to be
# about, so the norms describe ordinary text. Changing it invalidates every cached measurement.
NEUTRAL_TEXT = (
    "The library opens at nine in the morning and closes at six in the evening. On the ground floor there "
    "is a reading room with long tables, a row of lamps and a shelf of daily newspapers. The second floor "
    "holds books on history, geography and the natural sciences, sorted by subject and then by the name "
    "of the author. Visitors may borrow up to five books at a time for three weeks. A small office near "
    "the stairs handles returns, renewals and requests for books from other branches. In the afternoon "
    "a few students work on their assignments, an older man reads a magazine about trains, and a woman "
    "copies a table of figures into a notebook. The building was built of brick about a century ago and "
    "was extended twice. Its windows face a quiet street with a bakery, a post office and a bus stop. "
    "The number seven bus stops there every fifteen minutes on weekdays and every half hour on Sundays."
)


def text_version(text: str = NEUTRAL_TEXT) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def default_cache_dir() -> Path:
    return app_dirs.cache_root()


@dataclass(frozen=True)
class ResidualNorms:
    """Typical resid_pre norm per layer of one model: `norms[l]` for layer `l` (0 = the embeddings)."""

    norms: list[float]  # [n_layers]
    n_tokens: int  # positions the medians were taken over (position 0 and special tokens excluded)
    fingerprint_id: str
    model: str  # the model's name hint, for messages
    cached: bool = False  # True when read from the cache rather than measured just now
    cache_file: str = ""

    def at(self, layer: int) -> float:
        if not 0 <= layer < len(self.norms):
            raise InvalidInputError(
                f"layer {layer} is out of range: the model has {len(self.norms)} layers (0-{len(self.norms) - 1})"
            )
        return self.norms[layer]

    def to_dict(self) -> dict:
        return asdict(self)


def neutral_ids(loaded: LoadedModel, text: str = NEUTRAL_TEXT) -> list[int]:
    """The measured token ids: one BOS and the text, cut to the model's context and `MAX_TOKENS`."""
    tokenizer: Any = loaded.tokenizer
    limit = min(MAX_TOKENS, context_limit(loaded.model.config) or MAX_TOKENS)
    # Whole sentences that fit, so the tokenizer is never handed more than the model's context (it warns
    # about every such text); sentences counted apart, plus one token each for a changed boundary.
    sentences = [part if part.endswith(".") else part + "." for part in text.split(". ") if part]
    chosen: list[str] = []
    budget = limit - 1  # one position for BOS
    for sentence in sentences:
        cost = len(tokenizer(" " + sentence, add_special_tokens=False)["input_ids"]) + 1
        if chosen and cost > budget:
            break
        chosen.append(sentence)
        budget -= cost
    return encode(tokenizer, " ".join(chosen))[:limit]


def measured_positions(loaded: LoadedModel, ids: list[int]) -> list[int]:
    """Positions whose norms count: not position 0 (an attention sink) and no BOS or other special token."""
    special = set(getattr(loaded.tokenizer, "all_special_ids", None) or ())
    return [i for i, token in enumerate(ids) if i > 0 and token not in special]


def measure_residual_norms(loaded: LoadedModel, text: str = NEUTRAL_TEXT) -> tuple[list[float], int]:
    """(median per-token ||resid_pre|| for every layer, the number of positions measured); no cache."""
    ids = neutral_ids(loaded, text)
    positions = measured_positions(loaded, ids)
    if len(positions) < MIN_TOKENS:
        raise InvalidInputError(
            f"only {len(positions)} ordinary tokens fit this model's context; need {MIN_TOKENS} to measure "
            "typical residual norms"
        )
    layers = list(range(len(loaded.blocks)))
    acts = resid_pre(loaded, torch.tensor([ids]), layers)  # layer -> [1, seq, hidden] float32
    keep = torch.tensor(positions)
    # quantile(0.5) is the textbook median (the mean of the middle two for an even count)
    norms = [float(acts[l][0, keep].norm(dim=-1).quantile(0.5)) for l in layers]
    return norms, len(positions)


def _weights_identity(path: str) -> list:
    """What changes when the weights do, without reading them: name, size and mtime of each file."""
    root = Path(path)
    files = (
        [root]
        if root.is_file()
        else sorted(f for pattern in ("*.safetensors", "*.bin", "*.gguf") for f in root.glob(pattern))
    )
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append([f.name, st.st_size, st.st_mtime_ns])
    return out


def variant_key(loaded: LoadedModel, text: str = NEUTRAL_TEXT) -> str:
    """Everything besides the fingerprint that a measurement depends on, hashed."""
    info = loaded.info
    key = json.dumps(
        {
            "weights": _weights_identity(info.path),
            "quantize": info.quantize,
            "dtype": info.dtype,
            "text": text_version(text),
            "max_tokens": MAX_TOKENS,
        },
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cache_file(fingerprint: ModelFingerprint, cache_dir: Path | str | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "residual-norms" / f"{fingerprint.id}.json"


def _read_cache(path: Path) -> dict:
    """The cache file's measurements (variant -> record), or {} when missing, foreign or corrupt."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_CACHE_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return {}
    measurements = data.get("measurements")
    return measurements if isinstance(measurements, dict) else {}


def _valid_record(record: object, n_layers: int) -> bool:
    if not isinstance(record, dict):
        return False
    norms = record.get("norms")
    return (
        isinstance(norms, list)
        and len(norms) == n_layers
        and all(isinstance(x, (int, float)) and x == x and 0 < x < float("inf") for x in norms)
        and isinstance(record.get("n_tokens"), int)
    )


def residual_norms(
    loaded: LoadedModel, *, cache_dir: Path | str | None = None, refresh: bool = False
) -> ResidualNorms:
    """The typical resid_pre norm at every layer of `loaded`, from the cache or measured (and cached).

    `refresh` measures again even on a cache hit. A cache folder that can't be written is not an error:
    the measurement is returned uncached.
    """
    fp = loaded.fingerprint
    path = cache_file(fp, cache_dir)
    variant = variant_key(loaded)
    n_layers = len(loaded.blocks)
    measurements = _read_cache(path)
    record = measurements.get(variant)
    if not refresh and _valid_record(record, n_layers):
        assert isinstance(record, dict)
        return ResidualNorms(
            norms=[float(x) for x in record["norms"]],
            n_tokens=record["n_tokens"],
            fingerprint_id=fp.id,
            model=fp.model_hint,
            cached=True,
            cache_file=str(path),
        )
    norms, n_tokens = measure_residual_norms(loaded)
    measurements.pop(variant, None)
    measurements[variant] = {
        "norms": norms,
        "n_tokens": n_tokens,
        "model_path": loaded.info.path,
        "quantize": loaded.info.quantize,
        "dtype": loaded.info.dtype,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    while len(measurements) > MAX_VARIANTS:  # dicts keep insertion order: drop the oldest
        measurements.pop(next(iter(measurements)))
    payload = {"format": CACHE_FORMAT, "fingerprint": json.loads(fp.to_json()), "measurements": measurements}
    written = True
    try:
        atomic_write_text(path, json.dumps(payload, indent=1))
    except OSError:
        written = False  # a read-only cache: still a valid measurement, just not kept
    return ResidualNorms(
        norms=norms,
        n_tokens=n_tokens,
        fingerprint_id=fp.id,
        model=fp.model_hint,
        cached=False,
        cache_file=str(path) if written else "",
    )


def cached_norms(fingerprint: ModelFingerprint, cache_dir: Path | str | None = None) -> list[float] | None:
    """The latest cached profile of a model with this fingerprint, without loading it (None if never
    measured): what `library show` compares a vector with when no model is named."""
    records = _read_cache(cache_file(fingerprint, cache_dir))
    valid = [r for r in records.values() if _valid_record(r, fingerprint.n_layers)]
    return [float(x) for x in valid[-1]["norms"]] if valid else None


def residual_norm_profile(loaded: LoadedModel, *, cache_dir: Path | str | None = None) -> list[float]:
    """`[n_layers]` typical resid_pre norms, e.g. to plot against the layer when choosing one."""
    return residual_norms(loaded, cache_dir=cache_dir).norms
