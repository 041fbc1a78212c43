"""Static micro-batching: requests that arrive within a few milliseconds run as rows of one `generate` call.

One worker thread owns the model's generate calls. It waits for a request, keeps collecting for
`window_s` (or until `max_batch` rows), and runs every request whose sampling settings match the first one
as one batch: each row has its own prompt, its own steering (rows of one `SteeringPlan`), its own
`max_tokens` and stop strings. Rows end on their own through `RowStopper`, a StoppingCriteria that
transformers asks after every token; once all rows are done, generate returns. A client that goes away
marks its row done the same way, so a lone disconnected request stops at the next token.

Why static batches and not continuous batching: `engine.generate` is transformers' `generate`, whose KV
cache and the SteeringPlan's per-row prompt offsets (front alignment) are fixed when the batch starts;
joining a row mid-flight would need a hand-written decode loop and paged cache. See docs/serving.md.

Memory is bounded: at most `max_queue` requests wait (more are refused with QueueFullError -> HTTP 503),
at most `max_batch` run, and a row's events are its own tokens only.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import torch
from transformers import StoppingCriteria

from engine.chat import RenderedChat
from engine.errors import ActAddError
from engine.generation import SamplingConfig, TokenEvent, generate, stop_holdback
from engine.models import LoadedModel
from engine.steering import Steer


class QueueFullError(ActAddError):
    """Too many requests are waiting; the client should retry later (HTTP 503 with Retry-After)."""


class ServerClosingError(ActAddError):
    """The server is shutting down and takes no new requests."""


# (kind, payload): ("delta", str) for new text, ("done", Job) once finished, ("error", str) on failure
# (ServerClosingError for a request the server never ran because it is shutting down).
Sink = Callable[[str, object], None]


@dataclass(eq=False)
class Job:
    """One request: one row of a batch."""

    prompt: RenderedChat | list[int]  # a rendered chat keeps where its front vectors start
    steers: list[Steer]
    sampling: SamplingConfig  # this request's own settings; max_new_tokens and stop act per row
    sink: Sink
    # Filled in while it runs (only by the worker thread, except `cancelled`).
    token_ids: list[int] = field(default_factory=list)
    text: str = ""  # the generated text, cut before a stop string
    shown: int = 0  # characters of `text` already sent to the sink
    finish_reason: str | None = None  # "stop" (eos or stop string), "length", "cancelled"
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def prompt_ids(self) -> list[int]:
        return self.prompt.ids if isinstance(self.prompt, RenderedChat) else self.prompt

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled.is_set()

    def cancel(self) -> None:
        """Called from the client's side when it goes away: the row stops at its next token."""
        self.cancelled.set()

    def batch_key(self) -> tuple:
        """Requests with equal keys can share a batch: the logits processing is batch-wide."""
        s = self.sampling
        if s.temperature == 0:  # greedy: top_p and the seed make no difference
            return ("greedy", s.frequency_penalty, s.presence_penalty)
        # Each row samples from its own generator (generate's row_seeds), so the seed is not batch-wide.
        return ("sample", s.temperature, s.top_p, s.frequency_penalty, s.presence_penalty)


class RowStopper(StoppingCriteria):
    """Marks rows finished once their job is done (length, stop string, eos or a client gone)."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.tensor([job.done for job in self.jobs], dtype=torch.bool, device=input_ids.device)


class _RowText:
    """Turns one row's token ids into text deltas with the engine's rules (stop strings, split chars)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id

    def feed(self, job: Job, event: TokenEvent) -> None:
        if job.done or event.token_id < 0:  # -1: the engine's end-of-batch flush of its own held text
            return
        if event.token_id == self.eos:
            self._finish(job, "stop")
            return
        job.token_ids.append(event.token_id)
        text = self.tokenizer.decode(job.token_ids, skip_special_tokens=True)
        stops = job.sampling.stop
        hits = [h for s in stops if (h := text.find(s, max(0, job.shown - len(s)))) >= 0]
        job.text = text[: min(hits)] if hits else text
        if hits:
            self._finish(job, "stop")
        elif len(job.token_ids) >= job.sampling.max_new_tokens:
            self._finish(job, "length")
        else:
            end = len(job.text) - stop_holdback(job.text, stops)
            if job.text.endswith("\ufffd"):
                end = min(end, len(job.text) - 1)  # an incomplete multi-byte character: wait for the rest
            self._send(job, end)

    @staticmethod
    def _finish(job: Job, reason: str) -> None:
        job.finish_reason = reason
        _RowText._send(job, len(job.text))
        job.sink("done", job)  # now, not when the whole batch ends: its client can move on

    @staticmethod
    def _send(job: Job, end: int) -> None:
        if end > job.shown:
            job.sink("delta", job.text[job.shown : end])
            job.shown = end


class Batcher:
    """The queue and the worker thread that runs micro-batches through `engine.generate`."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch: int = 8,
        window_s: float = 0.01,
        max_queue: int = 64,
        lock: AbstractContextManager | None = None,
    ):
        self.loaded = loaded
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.lock = lock if lock is not None else nullcontext()  # shared with other users of the model
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()  # cancels the running batch when shutdown runs out of patience
        self._rows = _RowText(loaded.tokenizer)
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=256)  # recent batches, for stats
        self._thread = threading.Thread(target=self._run, name="actadd-serve-batcher", daemon=True)
        self._thread.start()

    # ---- the request side ---------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._closing:
                raise ServerClosingError("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFullError(f"{self.max_queue} requests are already waiting; retry shortly")
            self._pending.append(job)
            self._cond.notify_all()
        return job

    @property
    def queued(self) -> int:
        return len(self._pending)

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new work, fail what is waiting, let the running batch finish (cancelled after `timeout`)."""
        with self._cond:
            self._closing = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for job in waiting:
            job.sink("error", ServerClosingError("the server is shutting down"))
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(timeout)

    # ---- the worker ---------------------------------------------------------------------------------
    def _take_batch(self) -> list[Job] | None:
        """Block for a first request, collect matching ones for `window_s`, return up to `max_batch`."""
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if self._closing:
                return None
            key = self._pending[0].batch_key()

            def matching() -> list[Job]:
                return [j for j in self._pending if j.batch_key() == key][: self.max_batch]

            self._cond.wait_for(lambda: len(matching()) >= self.max_batch or self._closing, self.window_s)
            batch = matching()
            for job in batch:
                self._pending.remove(job)
        return batch

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            live = [job for job in batch if not job.cancelled.is_set()]
            for job in batch:
                if job.cancelled.is_set():
                    job.finish_reason = "cancelled"
                    job.sink("done", job)
            if live:
                self._generate(live)

    def _generate(self, jobs: list[Job]) -> None:
        first = jobs[0].sampling
        sampling = replace(
            first,
            max_new_tokens=max(j.sampling.max_new_tokens for j in jobs),
            stop=(),  # stop strings act per row, in _RowText
            seed=first.seed if first.temperature > 0 else None,
        )

        def on_token(event: TokenEvent) -> None:
            self._rows.feed(jobs[event.row], event)

        self.batch_sizes.append(len(jobs))
        try:
            with self.lock:
                generate(
                    self.loaded,
                    [j.prompt for j in jobs],
                    [j.steers for j in jobs],
                    sampling,
                    cancel=self._abort,
                    on_token=on_token,
                    stopping=[RowStopper(jobs)],
                    row_seeds=[j.sampling.seed for j in jobs],  # a request without a seed gets a random one
                )
        except ActAddError as exc:  # out of memory, or a check the request side could not foresee
            for job in jobs:
                job.sink("error", str(exc))
            return
        except Exception as exc:  # a bug must fail its requests, never the worker that serves the rest
            logging.getLogger(__name__).exception("generation failed")
            for job in jobs:
                job.sink("error", f"internal error: {type(exc).__name__}")
            return
        for job in jobs:
            if job.finish_reason is None:
                # eos is caught in _RowText; a row that ran out of context or batch budget ends on length
                job.finish_reason = (
                    "cancelled" if job.cancelled.is_set() or self._abort.is_set() else "length"
                )
                self._rows._send(job, len(job.text))
            job.sink("done", job)
