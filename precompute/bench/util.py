"""Helpers for benchmark commands: a float32 matmul rate and robust timings.

Benchmarks print figures; tests never assert on them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 matrix-multiply rate (FLOP/s) of ``n x n @ n x n`` on this machine, now."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
