"""Helpers for the server tests: a library of vectors for a model, and a running server on a free loopback port."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai

from engine import capture_actadd
from engine.library import Library
from engine.models import LoadedModel
from engine.serve import SteeringServer


def make_library(loaded: LoadedModel, root: Path, layer: int = 2) -> Library:
    """love-hate (front, c=4), long (a front vector of many tokens), calm (a direction, mode all),
    other (love-hate recorded as captured on another model of the same width)."""
    library = Library(root)
    love = capture_actadd(loaded, "Love", "Hate", layer, name="love-hate", default_coeff=4.0)
    library.save(love, "love-hate")
    long_text = "I talk about weddings constantly and I love them very much indeed"
    library.save(capture_actadd(loaded, long_text, "Hate", layer, name="long"), "long")
    library.to_direction("love-hate", "calm")
    fp = dataclasses.replace(loaded.fingerprint, vocab_hash="0" * 16, model_hint="someone-else")
    library.save(love.replace(fingerprint=fp, name="other"), "other")
    return library


@contextmanager
def running(loaded: LoadedModel, library: Library, **options) -> Iterator[SteeringServer]:
    server = SteeringServer(loaded, library, port=0, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client(server: SteeringServer, api_key: str = "unused", **options) -> openai.OpenAI:
    # max_retries=0: a 503 must reach the test, not be retried by the client
    return openai.OpenAI(base_url=server.url, api_key=api_key, max_retries=0, timeout=60, **options)
