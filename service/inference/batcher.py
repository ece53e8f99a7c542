"""Micro-batching: concurrent requests for one model share onnxruntime runs.

Each *runner thread* runs batches with its own runner (a single-threaded onnxruntime
session), so as many batches run at once as there are runners — the way N single-threaded
processes use N cores, but in one process that batches across all of its requests. A runner
never waits when nobody else is about to submit (low load costs no latency); while runners
are busy, newcomers
queue and go together in the next batch; and when other requests are still decoding
(`announce`d), a forming batch waits up to `max_wait_s` for them.

A lone request (every runner idle, nothing queued or arriving, and `others_busy()` false)
runs on the optional `solo` runner instead, in the request's own thread: a session using all
cores, so latency at low load is the all-core latency with no thread hand-off.

`inline=True` has no runner threads at all: every request runs in its own thread, on the
first runner or, alone, on `solo`. That is for a process that serves one request at a time
(a sync gunicorn worker per core, `service.cores`), where nothing could join a batch and a
hand-off to a runner thread would only cost time; `others_busy` then tells whether the other
workers' cores are in use.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

Outputs = dict[str, np.ndarray]
RunBatch = Callable[[np.ndarray], Outputs]


@dataclass
class _Item:
    inputs: np.ndarray
    future: Future[Outputs] = field(default_factory=Future)


class Arrival:
    """A request announced to a batcher; `run` submits it and waits for its outputs."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self.submitted = False

    def run(self, inputs: np.ndarray) -> Outputs:
        self.submitted = True
        return self._batcher.submit(inputs, announced=True).result()


class MicroBatcher:
    """Queues (n, ...) input arrays and runs them concatenated, up to `max_batch_size` rows."""

    def __init__(
        self,
        run: RunBatch | Sequence[RunBatch],
        *,
        max_batch_size: int,
        max_wait_s: float,
        solo: RunBatch | None = None,
        others_busy: Callable[[], bool] = lambda: False,
        inline: bool = False,
        on_batch: Callable[[int], None] | None = None,
        name: str = "batcher",
    ) -> None:
        runners = [run] if callable(run) else list(run)
        self._runners = runners
        self._solo = solo
        self._others_busy = others_busy
        self._inline = inline
        self._max = max_batch_size
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._arriving = 0
        self._busy = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, args=(r,), name=f"{name}-{i}", daemon=True)
            for i, r in enumerate([] if inline else runners)
        ]
        for thread in self._threads:
            thread.start()

    @contextmanager
    def announce(self) -> Iterator[Arrival]:
        """Mark a request as on its way (decoding), so a forming batch may wait for it.

        Submit through the yielded `Arrival`; leaving the block without submitting withdraws.
        """
        arrival = Arrival(self)
        with self._cond:
            self._arriving += 1
        try:
            yield arrival
        finally:
            if not arrival.submitted:
                with self._cond:
                    self._arriving -= 1
                    if self._queue:  # a runner may be holding a batch open for this request
                        self._cond.notify()

    def submit(self, inputs: np.ndarray, *, announced: bool = False) -> Future[Outputs]:
        item = _Item(inputs)
        with self._cond:
            if announced:
                self._arriving -= 1
            closed = self._closed
            here = self._solo if self._alone() else None
            if here is None and self._inline:
                here = self._runners[0]
            if here is not None:
                self._busy += 1
            elif not closed:
                self._queue.append(item)
                self._cond.notify()  # one runner; waking every runner costs GIL hand-offs
        if here is not None:  # alone, or inline: run in this thread, no thread hand-offs
            try:
                self._execute([item], here)
            finally:
                with self._cond:
                    self._busy -= 1
        elif closed:  # unloaded while this request held it: run here rather than fail it
            self._execute([item], self._runners[0])
        return item.future

    def _alone(self) -> bool:
        """No batch running, queued or on its way here, and no other worker busy (call with
        the lock held)."""
        return (
            self._busy == 0
            and not self._queue
            and self._arriving == 0
            and not self._closed
            and not self._others_busy()
        )

    def set_solo(self, solo: RunBatch | None) -> None:
        """Use `solo` for lone requests from now on."""
        with self._cond:
            self._solo = solo

    def run(self, inputs: np.ndarray) -> Outputs:
        """Submit and wait for this request's slice of the batch outputs."""
        return self.submit(inputs).result()

    def close(self) -> None:
        """Stop after running what is already queued; later submits run in their own thread,
        so requests holding an evicted model still complete."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self, runner: RunBatch) -> None:
        while True:
            taken = self._next_batch()
            if taken is None:
                return
            batch, alone = taken
            try:
                self._execute(batch, self._solo if alone and self._solo else runner)
            finally:
                with self._cond:
                    self._busy -= 1

    def _next_batch(self) -> tuple[list[_Item], bool] | None:
        """The next batch, and whether it is alone (no other work anywhere in the batcher)."""
        with self._cond:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                deadline = time.monotonic() + self._max_wait_s
                while self._queue and self._arriving > 0 and self._rows() < self._max:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        break
                    self._cond.wait(remaining)
                if not self._queue:
                    continue  # another runner took it while this one waited
                batch = self._take()
                alone = self._alone()
                self._busy += 1
                return batch, alone

    def _rows(self) -> int:
        return sum(len(item.inputs) for item in self._queue)

    def _take(self) -> list[_Item]:
        batch = [self._queue.popleft()]
        rows = len(batch[0].inputs)
        while self._queue and rows + len(self._queue[0].inputs) <= self._max:
            item = self._queue.popleft()
            rows += len(item.inputs)
            batch.append(item)
        return batch

    def _execute(self, batch: list[_Item], runner: RunBatch) -> None:
        inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([i.inputs for i in batch])
        try:
            outputs = runner(inputs)
        except BaseException as exc:  # hand any failure to every waiting request
            for item in batch:
                item.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(inputs))
        start = 0
        for item in batch:
            stop = start + len(item.inputs)
            item.future.set_result({k: v[start:stop] for k, v in outputs.items()})
            start = stop
