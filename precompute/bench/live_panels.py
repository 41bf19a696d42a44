"""``bench live-panels``: seconds per live panel on a 20-token prompt (issue 13: under 5 s).

Each panel runs the library call its page makes, with the page's defaults:

* ``delete_swap``: delete the middle block, then swap it with the next one (each: the normal
  and the intervened logits, ``interventions.intervened_logits``);
* ``knockout``: ``attention_knockout.knockout_fact``, window 9, every edge set, every layer;
* ``rsa``: ``rsa.live_rsa`` on the page's seven default sentences;
* ``causal_trace``: the streamed trace of the page (``tracing.trace_frames``, hidden states,
  coarse grid first, one intra-op thread as the page runs it): seconds to the first partial
  heatmap and to the finished one (issue 13: 5 s and 60 s).

Figures are medians of 3 runs (``--n`` to change) after one warm-up (the trace: one run). Each
panel computes on one intra-op thread, as the app's ``live.run`` runs every live request
(``STAGESCOPE_BENCH_THREADS`` to compare; ``0`` = torch's default). ``causal_trace_coarse_seconds``:
every 4th block traced. ``load_average`` (1 min, before and after) says how busy the machine
was.

Example:
    python -m precompute bench live-panels --model smollm2-135m --json
"""

from __future__ import annotations

import os
import time

import torch

from precompute.bench.util import median_seconds

NAME = "live-panels"
#: 20 tokens on SmolLM2's tokenizer; the subject is the Eiffel Tower.
PROMPT = "In the heart of the French capital, the iron Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"
SENTENCES = [
    "The cat sat on the mat.",
    "A dog slept on the rug.",
    "Paris is the capital of France.",
    "Rome is the capital of Italy.",
    "Water boils at one hundred degrees.",
    "Ice melts when it gets warm.",
    "She plays the violin every night.",
]


def run(model_name: str, args) -> dict:
    """Time every live panel once warm; report seconds per panel."""
    from precompute.methods.attention_knockout import knockout_fact
    from precompute.methods.rsa import RSAConfig, live_rsa
    from precompute.model import interventions as iv
    from precompute.model.load import load_model
    from precompute.model.threads import intra_op_threads
    from precompute.model.tracing import CausalTracingConfig, trace_frames

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    repeats = int(getattr(args, "n", None) or 3)
    threads = int(os.environ.get("STAGESCOPE_BENCH_THREADS", "1")) or torch.get_num_threads()
    ids = lm.tokenize(PROMPT)
    mid = lm.n_layers // 2
    load_before = os.getloadavg()[0]

    def delete_swap() -> None:
        iv.intervened_logits(lm, ids, iv.Intervention("delete", mid, "block"))
        iv.intervened_logits(lm, ids, iv.Intervention("swap", mid, other=mid + 1))

    with intra_op_threads(threads):
        figures = {
            "delete_swap": median_seconds(delete_swap, repeats) / 2,
            "knockout": median_seconds(lambda: knockout_fact(lm, PROMPT, SUBJECT, 9), repeats),
            "rsa": median_seconds(lambda: live_rsa(lm, SENTENCES, RSAConfig()), repeats),
        }
    t0 = time.perf_counter()
    first = coarse = None
    frames = 0
    cfg = CausalTracingConfig(kinds="hidden")
    for fr in trace_frames(lm, PROMPT, SUBJECT, cfg, threads=threads):
        frames += 1
        now = time.perf_counter() - t0
        first = first if first is not None or not fr.done else now
        coarse_done = bool(fr.cells["hidden"][:, ::4].all())
        coarse = coarse if coarse is not None or not coarse_done else now
    return {
        "model": lm.name,
        "tokens": int(ids.shape[1]),
        "threads": threads,
        "seconds": {k: round(v, 3) for k, v in figures.items()},
        "causal_trace_first_frame_seconds": round(first or 0.0, 3),
        "causal_trace_coarse_seconds": round(coarse or 0.0, 3),
        "causal_trace_seconds": round(time.perf_counter() - t0, 3),
        "causal_trace_frames": frames,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
