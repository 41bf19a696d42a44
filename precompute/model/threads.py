"""Thread use for short live computations on a small, shared CPU.

A live request is many small operations (a 32-token forward pass is ~450 of them). Split
across OpenMP threads, every one ends in a barrier; on a busy machine (more runnable processes
than cores) a barrier waits for a descheduled thread, and the pass ran 15x slower with 2
threads than with 1 (``bench live-logit-lens``, issue 13). Two tools:

* :func:`intra_op_threads` runs a block of code with ``n`` intra-op threads in the calling
  thread only (torch's thread count is per thread), then restores it;
* :func:`map_threads` spreads independent pieces of work over worker threads that each compute
  on one core: as many cores busy, one join at the end instead of a barrier per operation.

Example:
    >>> with intra_op_threads(1):
    ...     torch.get_num_threads()
    1
    >>> map_threads(lambda x: x * 2, [1, 2, 3], workers=2)
    [2, 4, 6]
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

#: Torch's thread count when this module was imported (the process default): the workers of
#: :func:`map_threads`, also inside a request that computes on one intra-op thread.
DEFAULT_THREADS = torch.get_num_threads()
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_POOL_SIZE = 0


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Compute with ``n`` intra-op threads in this thread for the duration, then restore."""
    old = torch.get_num_threads()
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)  # also restores the count new threads start with


def _one_core() -> None:
    torch.set_num_threads(1)  # thread-local: this worker computes on one core


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or workers > _POOL_SIZE:
            old = torch.get_num_threads()
            _POOL = ThreadPoolExecutor(workers, "stagescope-worker", initializer=_one_core)
            _POOL_SIZE = workers
            # torch.set_num_threads in a worker also sets the count that threads started later
            # begin with; the caller's setting restores it once the workers exist.
            started = threading.Barrier(workers)  # every worker thread exists after this
            list(_POOL.map(lambda _: started.wait(), range(workers)))
            torch.set_num_threads(old)
        return _POOL


def map_threads(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` single-core threads (:data:`DEFAULT_THREADS`).

    ``fn`` runs under ``torch.inference_mode`` (thread-local, so entered in each worker).
    Results come back in the order of ``items``; the first exception is raised.
    """
    workers = min(workers or DEFAULT_THREADS, len(items))
    if workers <= 1:
        with intra_op_threads(1), torch.inference_mode():
            return [fn(x) for x in items]

    def run(x: T) -> R:
        with torch.inference_mode():
            return fn(x)

    return list(_pool(workers).map(run, items))
