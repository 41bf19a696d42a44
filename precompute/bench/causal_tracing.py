"""Benchmark: the reference (ROME) and fast causal traces on the same facts and noise.

``STAGESCOPE_CT_BENCH_KINDS`` (default ``hidden,mlp,attn``) picks the kinds compared. Also times
one live trace (hidden states only).
"""

from __future__ import annotations

import os

import torch

from precompute.bench.util import matmul_peak_flops

NAME = "causal-tracing"
BENCH_FACTS = [
    ("The capital of France is the city of", "France"),
]
LIVE_FACT = ("The Statue of Liberty is located in the city of", "Statue of Liberty")


def run(model_name: str, args) -> dict:
    """Time both traces; report seconds, speed-up and the largest score difference."""
    from precompute.methods.causal_tracing import (
        CausalTracingConfig,
        reference_sigma,
        trace,
        trace_reference,
    )
    from precompute.model.load import load_model

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    kinds = os.environ.get("STAGESCOPE_CT_BENCH_KINDS", "hidden,mlp,attn")
    cfg = CausalTracingConfig(kinds=kinds)
    reference_s = fast_s = 0.0
    diff = 0.0
    for text, subject in BENCH_FACTS:
        reference_sigma(lm, cfg.noise_ref)  # measured once, outside the timings
        ref = trace_reference(lm, text, subject, cfg)
        fast = trace(lm, text, subject, cfg)
        reference_s += ref.seconds
        fast_s += fast.seconds
        for k in ref.scores:
            diff = max(diff, float((ref.scores[k] - fast.scores[k]).abs().max()))
    live = trace(lm, *LIVE_FACT, CausalTracingConfig(kinds="hidden"))
    return {
        "model": model_name,
        "facts": len(BENCH_FACTS),
        "kinds": cfg.kinds,
        "samples": cfg.samples,
        "window": cfg.window,
        "reference_seconds": round(reference_s, 3),
        "fast_seconds": round(fast_s, 3),
        "speedup": round(reference_s / fast_s, 2),
        "max_abs_diff": diff,
        "live_trace_seconds": round(live.seconds, 3),
        "live_trace_tokens": live.n_tokens,
        "matmul_gflops_f32": round(matmul_peak_flops() / 1e9, 1),
        "torch_threads": torch.get_num_threads(),
    }
