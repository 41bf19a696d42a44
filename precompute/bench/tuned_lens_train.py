"""``bench tuned-lens-train``: a short tuned-lens training run; tokens, seconds, FLOPs, peak share.

Example:
    python -m precompute bench tuned-lens-train --model smollm2-135m --json
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from precompute.bench.util import matmul_peak_flops

NAME = "tuned-lens-train"


def run(model_name: str, args) -> dict:
    """Train two small steps after a warm-up; report tokens, seconds, FLOPs and peak fraction."""
    from precompute.datasets import load_wikitext
    from precompute.lenses.train import TrainConfig, Trainer, tokenize_docs, training_flops
    from precompute.model.load import load_model

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    items, _ = load_wikitext(getattr(args, "data_dir", None), 40)
    cfg = TrainConfig(num_steps=2, tokens_per_step=64, max_seq_len=64, micro_tokens=128)
    docs = tokenize_docs(lm, items, cfg.max_seq_len)
    Trainer(lm, docs, replace(cfg, tokens_per_step=8), None).train_step()  # warm-up, not timed
    trainer = Trainer(lm, docs, cfg, None)
    peak = matmul_peak_flops()
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    peak = max(peak, matmul_peak_flops())
    used = [len(trainer.docs[i]) for s in trainer.schedule for i in s]
    n_fwd = sum(used)
    n_loss = trainer.tokens_seen
    fl = training_flops(lm, n_fwd, n_loss, sum(used) / len(used))
    return dict(
        model=lm.name,
        tokens=n_loss,
        tokens_forward=n_fwd,
        steps=cfg.num_steps,
        train_seconds=round(secs, 3),
        flops=fl["total"],
        flops_breakdown=fl,
        matmul_flops_per_s=peak,
        fraction_of_peak=round(fl["total"] / secs / peak, 4),
        device=str(lm.device),
        threads=torch.get_num_threads(),
    )
