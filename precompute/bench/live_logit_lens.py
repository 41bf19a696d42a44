"""``bench live-logit-lens``: the live logit lens on a 32-token prompt against the matmul peak.

``flops`` counts the work the lens cannot avoid: the forward pass through the blocks (2 FLOPs per
block parameter per token) plus unembedding every residual state at every position
(``2 * (L+1) * T * D * V``; the last state's unembedding is the model's own output).
``fraction_of_peak`` = ``flops / lens_seconds / matmul_peak_flops``: the median lens time
against the best float32 matmul rate with torch's default thread count (``threads``), the
higher of two ways to use them: one product on ``threads`` OpenMP threads, and one product per
single-core worker at once (as the lens computes; under load the OpenMP one drops further, and
a peak that low would flatter the lens).
``load_average`` (1 min, before and after) says how busy the machine was: on a shared machine
both times move with it.

Example:
    python -m precompute bench live-logit-lens --model smollm2-135m --json
"""

from __future__ import annotations

import os
import time

import torch

from precompute.bench.util import matmul_peak_flops, median_seconds

NAME = "live-logit-lens"
PROMPT = "The Eiffel Tower is located in the city of Paris, which is the capital of France. " * 4


def worker_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 rate of one ``n^3`` product per single-core worker thread, all at once."""
    from precompute.model.threads import DEFAULT_THREADS, map_threads

    mats = [torch.randn(n, n) for _ in range(DEFAULT_THREADS)]
    best = float("inf")
    for i in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        map_threads(lambda a: a @ a, mats)
        if i:
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * len(mats) / best


def run(model_name: str, args) -> dict:
    """Time the forward pass and the full lens read-out; report the fraction of peak."""
    from precompute.lenses.readout import lens_readout
    from precompute.model.load import load_model
    from precompute.model.replay import block_stack, states_and_logits

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    ids = lm.tokenize(PROMPT)[:, :32]  # (1, 32)
    n_tok = ids.shape[1]
    load_before = os.getloadavg()[0]
    forward_s = median_seconds(lambda: states_and_logits(lm, ids, logits=False))
    lens_s = median_seconds(lambda: lens_readout(lm, ids))
    block_params = sum(p.numel() for p in block_stack(lm).parameters())
    flops = 2 * block_params * n_tok + 2 * (lm.n_layers + 1) * n_tok * lm.d_model * lm.d_vocab
    peak = max(matmul_peak_flops(), worker_peak_flops())
    return {
        "model": lm.name,
        "tokens": n_tok,
        "threads": torch.get_num_threads(),
        "lens_seconds": round(lens_s, 4),
        "forward_seconds": round(forward_s, 4),
        "flops": int(flops),
        "matmul_peak_flops": round(peak),
        "fraction_of_peak": round(flops / lens_s / peak, 3),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
