"""OpenAI's presence penalty as a transformers `LogitsProcessor` (the frequency penalty is in generation.py).

presence_penalty subtracts a flat amount from the logit of every token that already occurs in the generated
text, however often; frequency_penalty subtracts an amount per occurrence. Prompt tokens never count.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import LogitsProcessor


class PresencePenaltyProcessor(LogitsProcessor):
    """logit -= penalty for each token present at least once in the generated part of the row."""

    def __init__(self, penalty: float, prompt_length: int):
        self.penalty = penalty
        self.prompt_length = prompt_length  # padded prompt length: generated tokens start here in every row

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        generated = input_ids[:, self.prompt_length :]  # [batch, t]
        if generated.shape[1] == 0:
            return scores
        present = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, generated, True)  # [batch, vocab]
        return scores - self.penalty * present.to(scores.dtype)
