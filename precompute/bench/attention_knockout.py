"""Benchmark: attention knockout three ways (score hook, mask, no prefix cache) on a few facts.

``score_hook`` and ``mask`` reuse the key/value cache of the clean prefix (the default);
``uncached`` recomputes every position of every row (``use_cache=False``, score hook). Reports
seconds per fact and the largest probability differences between the ways.
"""

from __future__ import annotations

import time

from precompute.bench.util import matmul_peak_flops

NAME = "attention-knockout"
BENCH_FACTS = (
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("The capital of France is the city of", "France"),
)
WINDOW = 9


def run(model_name: str, args) -> dict:
    """Time the knockout of ``BENCH_FACTS`` three ways; JSON-ready figures."""
    from precompute.facts import subject_tokens, window_layers
    from precompute.methods.attention_knockout import BLOCK_SETS, block_keys
    from precompute.model.knockout import Cut, knockout_logprobs
    from precompute.model.load import load_model

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    ways = {
        "score_hook": dict(impl="score_hook"),
        "mask": dict(impl="mask"),
        "uncached": dict(impl="score_hook", use_cache=False),
    }
    timings: dict[str, float] = {}
    p_new: dict[str, list[float]] = {}
    for name, kw in ways.items():
        t0 = time.perf_counter()
        p_new[name] = []
        for prompt, subject in BENCH_FACTS:
            fact = subject_tokens(lm, prompt, subject)
            q = fact.n_tokens - 1
            cuts = [
                Cut(
                    tuple(window_layers(c, WINDOW, lm.n_layers)),
                    tuple(block_keys(g, fact.start, fact.end, q)),
                )
                for g in BLOCK_SETS
                for c in range(lm.n_layers)
            ]
            p_new[name] += knockout_logprobs(lm, fact.ids, cuts, **kw).exp().flatten().tolist()
        timings[name] = time.perf_counter() - t0
    n = len(BENCH_FACTS)

    def diff(a: str, b: str) -> float:
        return max(abs(x - y) for x, y in zip(p_new[a], p_new[b]))

    return {
        "model": model_name,
        "n_facts": n,
        "n_layers": lm.n_layers,
        "knockouts_per_fact": len(BLOCK_SETS) * lm.n_layers,
        "score_hook_seconds_per_fact": timings["score_hook"] / n,
        "mask_seconds_per_fact": timings["mask"] / n,
        "uncached_seconds_per_fact": timings["uncached"] / n,
        "cache_speedup": timings["uncached"] / timings["score_hook"],
        "max_abs_diff_mask_vs_hook": diff("mask", "score_hook"),
        "max_abs_diff_cached_vs_uncached": diff("uncached", "score_hook"),
        "matmul_gflops_fp32": matmul_peak_flops() / 1e9,
    }
