"""``bench representations``: every representation method on the same stimuli, against its passes.

Stimuli: the first ``n`` team facts (``--n``, default 64; probes need the model's answers as
labels); the quality metrics use ``BENCH_VIEWS`` augmented views (ours: fewer than SKEAN's 16 for
the CPU). ``forward_seconds`` times the forward passes alone (originals and views);
``total_seconds`` runs intrinsic dimension, probes, RSA and representation quality from one pass
over the originals (one copy of the pooled states, token-level metrics reduced on the fly) and one
over the views; ``ratio = total / forward``.

Example:
    python -m precompute bench representations --model smollm2-135m --json
"""

from __future__ import annotations

import logging
import time

import numpy as np

NAME = "representations"
#: Bench sizes (ours): stimuli and augmented views per stimulus.
BENCH_N = 64
BENCH_VIEWS = 4

log = logging.getLogger(__name__)


def run(model_name: str, args) -> dict:
    """Time the four representation methods from shared passes; see the module docstring."""
    from precompute.datasets import load_facts
    from precompute.methods import intrinsic_dimension as idim
    from precompute.methods import probes, rsa
    from precompute.methods import representation_quality as rq
    from precompute.model.internals import residual_states
    from precompute.model.load import load_model
    from precompute.model.pooled import PooledStates, pooled_states
    from precompute.types import RunContext

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    items, _ = load_facts(n=getattr(args, "n", None) or BENCH_N)
    qcfg = rq.QualityConfig(lidar_views=BENCH_VIEWS, max_tokens=64)
    pcfg = probes.ProbesConfig(min_per_class=5, max_tokens=64)
    texts = [it.text for it in items]
    view_texts = rq.views_of(items, max(2, qcfg.lidar_views), qcfg.seed)

    t0 = time.perf_counter()
    for text in texts + view_texts:
        residual_states(lm, lm.tokenize(text, max_tokens=qcfg.max_tokens))
    forward = time.perf_counter() - t0

    ctx = RunContext(lm.name, "bench", "facts")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    stats = rq.TokenStats(len(items), lm.n_layers + 1, lm.d_model, qcfg)
    answers: dict[int, int] = {}
    collect = probes.answer_collector(lm, answers)

    def on_states(j, states, ids):
        stats(j, states, ids)
        collect(j, states, ids)

    ps = pooled_states(lm, texts, qcfg.max_tokens, on_states=on_states)
    views = rq.view_embeddings(lm, items, qcfg)
    timings["passes_with_reductions"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    n_rows = len(idim.id_frame(ps, idim.IntrinsicDimensionConfig(), ctx))
    timings["intrinsic_dimension"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    labels = probes.labels_for(lm, items, [answers[j] for j in range(len(items))], "model_answer")
    try:
        n_rows += len(probes.probe_records(ps.last, np.array(labels), pcfg, lm.n_layers))
    except ValueError as err:  # too few examples per answer on this model
        log.warning("probes skipped in the bench: %s", err)
    timings["probes"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    ids = [it.prompt_id for it in items]
    rsa_note = "all states"
    try:
        res = rsa.rsa_from_pooled(ps, ids, rsa.RSAConfig())
    except ValueError as err:  # h_0 of facts whose first token (excluded) is the subject
        rsa_note = f"h_1..h_L only ({err})"
        without_h0 = PooledStates(ps.mean[1:], ps.last[1:], ps.n_tokens, ps.truncated)
        res = rsa.rsa_from_pooled(without_h0, ids, rsa.RSAConfig())
    n_rows += res.similarity.size
    timings["rsa"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    n_rows += len(rq.token_records(stats, items, lm.n_layers))
    n_rows += len(rq.dataset_records(stats.pooled, views, qcfg, lm.n_layers))
    timings["representation_quality"] = time.perf_counter() - t1
    total = time.perf_counter() - t0
    return {
        "model": lm.name,
        "device": str(lm.device),
        "n_stimuli": len(items),
        "n_views": max(2, qcfg.lidar_views),
        "n_forward_passes": len(texts) + len(view_texts),
        "forward_seconds": round(forward, 3),
        "total_seconds": round(total, 3),
        "ratio": round(total / forward, 3),
        "seconds_by_step": {k: round(v, 3) for k, v in timings.items()},
        "rows": int(n_rows),
        "rsa_states": rsa_note,
        "methods": ["intrinsic_dimension", "probes", "rsa", "representation_quality"],
    }
