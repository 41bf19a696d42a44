"""Benchmark: the deletion + swap sweep both ways (reference vs fast) on the same documents.

Reports seconds, speed-up, the largest metric difference, and the fast sweep's useful matmul work
against this machine's float32 matmul rate (``precompute.bench.util.matmul_peak_flops``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from precompute.bench.util import matmul_peak_flops

NAME = "layer-sweep"
BENCH_DOCS = 2
BENCH_TOKENS = 64


def fast_sweep_flops(lm: Any, n_pos: int, interventions: Sequence[Any]) -> float:
    """Count the useful floating-point work of the fast sweep on one prompt (matmuls only).

    A block on ``T`` positions costs ``2 T P`` for its ``P`` matrix weights plus ``4 T^2 d_attn``
    for scores and mixing; the unembedding ``2 T D V`` per output distribution.
    """
    from precompute.model.interventions import _prefix
    from precompute.model.replay import block_stack

    block = block_stack(lm)[0]
    p_block = sum(p.numel() for p in block.parameters() if p.ndim == 2)
    cfg = lm.bridge.cfg
    d_attn = int(cfg.n_heads) * int(cfg.d_head)
    per_block = 2 * n_pos * p_block + 4 * n_pos**2 * d_attn
    per_unembed = 2 * n_pos * lm.d_model * lm.d_vocab
    n_layers = lm.n_layers
    n_blocks = n_layers  # the normal run
    for iv in interventions:
        _, prefix, join = _prefix(lm, iv)
        n_blocks += len(prefix) + (n_layers - join)
    return float(n_blocks * per_block + (len(interventions) + 1) * per_unembed)


def run(model_name: str, args: Any) -> dict:
    """Time the deletion and swap sweeps, reference vs fast, on the same documents."""
    from precompute.datasets import DatasetError, load_examples, load_wikitext
    from precompute.model.interventions import delete_all, swap_all, sweep
    from precompute.model.load import load_model

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    try:
        items, _ = load_wikitext(getattr(args, "data_dir", None), n=BENCH_DOCS)
        dataset = "wikitext"
    except DatasetError:
        items, _ = load_examples(n=BENCH_DOCS)
        dataset = "examples"
    ivs = delete_all(lm.n_layers) + swap_all(lm.n_layers)
    docs = [lm.tokenize(it.text, max_tokens=BENCH_TOKENS) for it in items]
    docs = [d for d in docs if d.shape[1] >= 3]
    sweep(lm, docs[0], ivs[:1])  # warm-up
    rate = matmul_peak_flops()
    t0 = time.perf_counter()
    ref = [sweep(lm, d, ivs, method="reference") for d in docs]
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = [sweep(lm, d, ivs, method="fast") for d in docs]
    t_fast = time.perf_counter() - t0
    rate = max(rate, matmul_peak_flops())
    diff = max(float((r[k] - f[k]).abs().max()) for r, f in zip(ref, fast) for k in r)
    flops = sum(fast_sweep_flops(lm, int(d.shape[1]), ivs) for d in docs)
    return {
        "model": lm.name,
        "dataset": dataset,
        "n_docs": len(docs),
        "n_tokens": [int(d.shape[1]) for d in docs],
        "n_interventions": len(ivs),
        "reference_seconds": round(t_ref, 3),
        "fast_seconds": round(t_fast, 3),
        "speedup": round(t_ref / t_fast, 3),
        "max_abs_diff": diff,
        "fast_gflop": round(flops / 1e9, 2),
        "matmul_gflops": round(rate / 1e9, 2),
        "fraction_of_peak": round(flops / t_fast / rate, 4),
        "torch_threads": torch.get_num_threads(),
    }
