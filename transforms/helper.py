"""Pure work on batches (token counts) in a helper process, beside the build's main thread.

Not threads: tiktoken comes back to Python after every text, and a thread that wants the GIL back from a
busy main thread waits its switch interval (5 ms) each time (measured: counting 10,000 pages took 42 s instead
of 1.8 s next to a busy main thread). A process has its own GIL; each helper works on one thread, so the main
thread keeps a core.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
B = TypeVar("B")


class BatchHelper:
    """Runs `work(batch, *args)` for each submitted batch: the first one here, later ones in a helper process
    started with the second (a small build never pays for it), or earlier by `start`. Until the helper is up
    (its `warm_up` done), or if it cannot start (a script that calls `build` without
    `if __name__ == "__main__":`), batches run here.
    """

    def __init__(self, work: Callable[..., Any], *args: Any, warm_up: Callable[..., Any] | None = None,
                 warm_up_args: tuple = ()):
        self.work = work
        self.args = args
        self.warm_up = warm_up
        self.warm_up_args = warm_up_args
        self.pool: ProcessPoolExecutor | None = None
        self.ready: Future | None = None
        self.batches = 0
        self.running: deque[Future] = deque()  # submitted to the helper process, oldest first

    def __enter__(self) -> "BatchHelper":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def start(self) -> None:
        """Start the helper process now, not with the second batch: for a caller that already knows more
        than one batch will follow, so the helper's start-up overlaps the first."""
        if self.pool is None:
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=self.warm_up, initargs=self.warm_up_args)
            self.ready = self.pool.submit(len, ())

    def submit(self, batch: Any) -> Future:
        """A future of `work(batch, *args)`."""
        self.batches += 1
        if self.batches > 1:
            self.start()
        if self.ready is not None and self.ready.done() and self.ready.exception() is None:
            self.running.append(self.pool.submit(self.work, batch, *self.args))
            return self.running[-1]
        here: Future = Future()
        here.set_result(self.work(batch, *self.args))
        return here

    def backlog(self) -> int:
        """Batches the helper process was given and has not finished (it works through them in order)."""
        while self.running and self.running[0].done():
            self.running.popleft()
        return len(self.running)


def batches(records: Iterable[T], size: int) -> Iterator[list[T]]:
    records = iter(records)
    while batch := list(islice(records, size)):
        yield batch


def pipelined(items: Iterable[B], submit: Callable[[B], Future], ahead: int = 2) -> Iterator[tuple[B, Any]]:
    """(item, result of its submitted work) in order, with `ahead` items submitted before a result is awaited."""
    pending: deque[tuple[B, Future]] = deque()
    for item in items:
        pending.append((item, submit(item)))
        if len(pending) > ahead:
            item, future = pending.popleft()
            yield item, future.result()
    while pending:
        item, future = pending.popleft()
        yield item, future.result()
