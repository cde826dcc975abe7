"""The batching queue behind `mmemo serve` (whose docstring tells how a request flows): a `Batcher` worker thread
owns the recognizer and runs queued inputs through `EmotionRecognizer.predict` in batches that grow with the load;
a full queue, or a server that is stopping, refuses an input with a `RequestError` (503) that the HTTP app answers
as it is. Nothing here imports FastAPI.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from mmemo.errors import ConfigError

DEFAULT_MAX_BATCH = 16
DEFAULT_BATCH_WAIT_MS = 10.0
DEFAULT_MAX_QUEUE = 256

log = logging.getLogger("mmemo.serve")  # the server's log: the worker's messages are part of `mmemo serve`'s


class RequestError(Exception):
    """A request the server refuses: the HTTP status, and the reason the client reads in `detail`."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass
class _Job:
    text: str
    audio: np.ndarray | None
    arrived: float  # time.monotonic() when queued
    future: concurrent.futures.Future


class Batcher:
    """The worker thread that owns a recognizer and runs queued inputs through it in batches.

    Args:
        recognizer: the EmotionRecognizer; only the worker thread calls it once `start` has run.
        max_batch: the most inputs in one batch.
        batch_wait_ms: how long after an input arrives the worker waits for others to batch with it.
        max_queue: the most inputs waiting; `submit` refuses more (503) instead of queueing without bound.

    Raises:
        ConfigError: a limit out of range (the message names the `mmemo serve` option).
    """

    def __init__(
        self,
        recognizer,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ):
        if max_batch < 1:
            raise ConfigError(f"--max-batch must be at least 1, got {max_batch}")
        if not 0 <= batch_wait_ms <= 10_000:
            raise ConfigError(f"--batch-wait-ms must be between 0 and 10000, got {batch_wait_ms:g}")
        if max_queue < 1:
            raise ConfigError(f"--max-queue must be at least 1, got {max_queue}")
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.wait_seconds = batch_wait_ms / 1000
        self.max_queue = max_queue
        self.batch_sizes: Counter[int] = Counter()  # inputs per batch run → number of such batches
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # guards batch_sizes, which the worker writes and /stats reads
        self._thread = threading.Thread(target=self._run, name="mmemo-serve-model", daemon=True)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict:
        """Batches run, inputs predicted and the batch-size histogram, read consistently."""
        with self._lock:
            sizes = dict(sorted(self.batch_sizes.items()))
        batches, inputs = sum(sizes.values()), sum(size * n for size, n in sizes.items())
        return {
            "batches": batches,
            "predicted": inputs,
            "mean_batch_size": round(inputs / batches, 3) if batches else None,
            "batch_sizes": {str(size): n for size, n in sizes.items()},
        }

    def start(self) -> None:
        self._thread.start()

    def submit(self, text: str, audio: np.ndarray | None) -> concurrent.futures.Future:
        """Queue one decoded input; the future resolves to (Prediction, size of the batch it ran in).

        Raises:
            RequestError: 503 when `max_queue` inputs are already waiting, or the server is stopping.
        """
        if self._closed:
            raise RequestError(503, "the server is shutting down; try again in a moment")
        if self._queue.qsize() >= self.max_queue:
            raise RequestError(
                503,
                f"the server is busy ({self.max_queue} inputs waiting, --max-queue); try again in a moment",
                {"Retry-After": "1"},
            )
        job = _Job(text, audio, time.monotonic(), concurrent.futures.Future())
        self._queue.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Finish the batch that runs, then stop; inputs still queued are refused (503)."""
        self._closed = True
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RequestError(503, "the server is shutting down; try again in a moment"))

    def _run(self) -> None:
        self._warm_up()
        while (jobs := self._take()) is not None:
            # a request whose client went away (its future cancelled) costs no inference
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if jobs:
                self._predict(jobs)

    def _warm_up(self) -> None:
        """One untimed prediction, so the first client does not pay for lazy initialisation."""
        rate = self.recognizer.config.sampling_rate
        noise = np.random.default_rng(0).normal(0, 0.05, rate).astype(np.float32)
        try:
            self.recognizer.predict(text="warm up", audio=noise, sampling_rate=rate)
        except Exception:
            log.exception("warm-up prediction failed; serving anyway")

    def _take(self) -> list[_Job] | None:
        """The next batch: the oldest input and those that arrive until its window closes; None to stop."""
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        deadline = first.arrived + self.wait_seconds
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop once this batch is answered
                break
            jobs.append(job)
        return jobs

    def _predict(self, jobs: list[_Job]) -> None:
        rate = self.recognizer.config.sampling_rate
        try:
            predictions = self.recognizer.predict(
                text=[job.text for job in jobs],
                audio=[job.audio for job in jobs],
                sampling_rate=rate,
                batch_size=len(jobs),
            )
        except Exception as e:
            if len(jobs) > 1:  # find the input that fails; the others still get their answers
                for job in jobs:
                    self._predict([job])
                return
            jobs[0].future.set_exception(e)
            return
        with self._lock:
            self.batch_sizes[len(jobs)] += 1
        for job, prediction in zip(jobs, predictions):
            job.future.set_result((prediction, len(jobs)))
