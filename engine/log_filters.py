"""Log filters the CLI and the app install at start-up (importing the engine installs nothing).

transformers' generate drops an all-ones attention mask, then the model sees BOS == pad id at position 0
and advises passing a mask. We always pass one (left padding is masked), so the advice is a false alarm
that would print on every run of a model whose pad token is its BOS (GPT-2's, the demo model's).
"""

from __future__ import annotations

import logging


class DropFalsePaddingAlarm(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "strongly recommend passing in an `attention_mask`" not in record.getMessage()


def install_log_filters() -> None:
    """Install the filters once (idempotent: safe to call from both entry points and from tests)."""
    logger = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, DropFalsePaddingAlarm) for f in logger.filters):
        logger.addFilter(DropFalsePaddingAlarm())
