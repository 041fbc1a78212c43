"""What steering did at each token: KL(steered || unsteered) on the same context, streamed.

For each measured row, `generate` adds one unsteered *shadow* row to the batch, with the same prompt, that
is forced to take the steered row's token at every step (`engine.sampling.ForceShadowTokens`). So at step
i both rows have read exactly the same tokens, the prompt and the steered row's first i tokens, and
differ only in steering. The effect of token i is KL(p_steered || p_unsteered) between the two raw
next-token distributions (the model's own, before penalties, temperature and top-p) that token i was
drawn from. It costs one extra row per measured row and arrives with the token.

An earlier version compared the steered row with the unsteered *pane* at the same step; once the texts
differ those are different contexts, and everything after the first divergent token lit up.
"""

from __future__ import annotations

import torch
from torch import Tensor

TOP_ALTERNATIVES = 5


def kl_divergence(steered: Tensor, unsteered: Tensor) -> Tensor:
    """KL(p || q) in nats from log-probabilities `[..., vocab]` -> `[...]`; exactly 0 for equal inputs."""
    p = steered.exp()
    # Terms where p = 0 contribute 0 (not 0 * -inf = nan), whatever q is.
    terms = torch.where(p > 0, p * (steered - unsteered), torch.zeros_like(p))
    return terms.sum(dim=-1).clamp_min(0.0)


class EffectRecorder:
    """Keeps the raw next-token log-probs of the latest step (a forward hook on the model's output).

    `shadows` maps each measured row to its shadow row in the batch.
    """

    def __init__(self, tokenizer, shadows: dict[int, int], top_k: int = TOP_ALTERNATIVES):
        self.tokenizer = tokenizer
        self.shadows = dict(shadows)
        self.top_k = top_k
        # Only the measured rows and their shadows are kept: [len(kept), vocab] of the latest step.
        self.kept = sorted({*self.shadows, *self.shadows.values()})
        self.index = {row: i for i, row in enumerate(self.kept)}
        self.logprobs: Tensor | None = None

    def hook(self, module, args, kwargs, output) -> None:
        # The model's final logits (after any soft-capping), last position only: [batch, vocab].
        logits = output.logits if hasattr(output, "logits") else output[0]
        last = logits[self.kept, -1].float()  # [kept, vocab]
        self.logprobs = torch.log_softmax(last, dim=-1).cpu()

    def install(self, model: torch.nn.Module):
        return model.register_forward_hook(self.hook, with_kwargs=True)

    def describe(self, row: int) -> tuple[float | None, list[tuple[str, float]]]:
        """(KL of `row` from its shadow, the unsteered model's top alternatives on the same context);
        (None, []) for rows that are not measured."""
        shadow = self.shadows.get(row)
        if self.logprobs is None or shadow is None:
            return None, []
        steered, unsteered = self.logprobs[self.index[row]], self.logprobs[self.index[shadow]]
        kl = float(kl_divergence(steered, unsteered))
        probs, ids = unsteered.exp().topk(self.top_k)
        return kl, [
            (self.tokenizer.decode([i]), float(p)) for p, i in zip(probs.tolist(), ids.tolist(), strict=True)
        ]
