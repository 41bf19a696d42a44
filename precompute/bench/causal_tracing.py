"""Benchmark: the reference (ROME) and fast causal traces on the same facts and noise.

``STAGESCOPE_CT_BENCH_KINDS`` (default ``hidden,mlp,attn``) picks the kinds compared;
``STAGESCOPE_CT_BENCH_REFERENCE=0`` skips the reference (hours for all three kinds on SmolLM2)
and times the fast trace alone; ``STAGESCOPE_CT_BENCH_SAVE=FILE`` saves the fast scores
(``torch.save``) to compare two versions of the code. ``*_cpu_seconds``: the process's CPU time
(less sensitive than wall time to other jobs on a shared machine). Also times one live trace
of the live-panels prompt (20 tokens, the same kinds, streamed coarse first on one intra-op
thread, as the page runs it): seconds to the first partial heatmap and to the finished one
(issue 13: 5 s and 60 s); ``STAGESCOPE_CT_BENCH_LIVE=0`` skips it,
``STAGESCOPE_CT_BENCH_LIVE_THREADS=2`` runs it on two threads.

Example:
    STAGESCOPE_CT_BENCH_REFERENCE=0 python -m precompute bench causal-tracing \
        --model smollm2-135m --json
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from precompute.bench.live_panels import PROMPT as LIVE_PROMPT
from precompute.bench.live_panels import SUBJECT as LIVE_SUBJECT
from precompute.bench.util import matmul_peak_flops

NAME = "causal-tracing"
BENCH_FACTS = [
    ("The capital of France is the city of", "France"),
]


def run(model_name: str, args) -> dict:
    """Time both traces; report seconds, speed-up and the largest score difference."""
    from precompute.methods.causal_tracing import (
        CausalTracingConfig,
        reference_sigma,
        trace,
        trace_reference,
    )
    from precompute.model.load import load_model
    from precompute.model.tracing import trace_frames

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    kinds = os.environ.get("STAGESCOPE_CT_BENCH_KINDS", "hidden,mlp,attn")
    with_reference = os.environ.get("STAGESCOPE_CT_BENCH_REFERENCE", "1") != "0"
    cfg = CausalTracingConfig(kinds=kinds)
    reference_s = fast_s = fast_cpu = 0.0
    diff = None
    tokens = []
    load_before = os.getloadavg()[0]
    saved = []
    for text, subject in BENCH_FACTS:
        reference_sigma(lm, cfg.noise_ref)  # measured once, outside the timings
        cpu = time.process_time()
        fast = trace(lm, text, subject, cfg)
        fast_cpu += time.process_time() - cpu
        fast_s += fast.seconds
        saved.append(fast.scores)
        tokens.append(fast.n_tokens)
        if with_reference:
            ref = trace_reference(lm, text, subject, cfg)
            reference_s += ref.seconds
            for k in ref.scores:
                d = float((ref.scores[k] - fast.scores[k]).abs().max())
                diff = max(diff or 0.0, d)
    if os.environ.get("STAGESCOPE_CT_BENCH_SAVE"):
        torch.save(saved, os.environ["STAGESCOPE_CT_BENCH_SAVE"])
    live = os.environ.get("STAGESCOPE_CT_BENCH_LIVE", "1") != "0"
    first, frames, live_s, live_cpu, live_tokens = None, 0, 0.0, 0.0, 0
    t0, cpu = time.perf_counter(), time.process_time()
    threads = int(os.environ.get("STAGESCOPE_CT_BENCH_LIVE_THREADS", "1"))
    # The live prompt is 20 SmolLM2 tokens; a test tokenizer may cut it finer than the cap.
    live_cfg = dataclasses.replace(cfg, max_tokens=max(cfg.max_tokens, 64))
    for fr in (
        trace_frames(lm, LIVE_PROMPT, LIVE_SUBJECT, live_cfg, threads=threads) if live else ()
    ):
        frames += 1
        if first is None and fr.done:
            first = time.perf_counter() - t0
        live_tokens = fr.result.n_tokens
    if live:
        live_s, live_cpu = time.perf_counter() - t0, time.process_time() - cpu
    out = {
        "model": model_name,
        "facts": len(BENCH_FACTS),
        "fact_tokens": tokens,
        "kinds": cfg.kinds,
        "samples": cfg.samples,
        "window": cfg.window,
        "fast_seconds": round(fast_s, 3),
        "fast_seconds_per_fact": round(fast_s / len(BENCH_FACTS), 3),
        "fast_cpu_seconds": round(fast_cpu, 3),
        "live_trace_first_frame_seconds": round(first or 0.0, 3),
        "live_trace_seconds": round(live_s, 3),
        "live_trace_cpu_seconds": round(live_cpu, 3),
        "live_trace_frames": frames,
        "live_trace_tokens": live_tokens,
        "live_trace_threads": threads,
        "matmul_gflops_f32": round(matmul_peak_flops() / 1e9, 1),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if with_reference:
        out.update(
            reference_seconds=round(reference_s, 3),
            speedup=round(reference_s / fast_s, 2),
            max_abs_diff=diff,
        )
    return out
