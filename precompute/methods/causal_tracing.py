"""Causal tracing (METHODS.md B1; Meng et al. 2022, ROME): where along depth is a fact stored.

Corrupt the subject: add Gaussian noise ``nu * eps`` (``nu = 3 sigma``) to the embedding output
at the subject tokens of ``S`` copies of the prompt. Then restore one clean state at a time and
measure how much of the clean answer's probability comes back:

* ``hidden``: the output of block ``l`` at token ``t``;
* ``mlp`` / ``attn``: the MLP (attention) outputs at token ``t`` for every layer of a window of
  ``W`` layers around ``l`` (``[max(0, l - W//2), min(L, l - (-W//2)))``, as ROME).

``p_restored(t, l)`` is the mean over the ``S`` copies of ``softmax(logits[-1])[o]`` where ``o`` is
the *clean* argmax; ``indirect_effect = p_restored - p_corrupt``. The noise is drawn once per fact
with ``numpy.RandomState(seed)`` in ROME's shape order ``(S, e - b, D)`` and reused for every
restoration (common random numbers), so a restoration before the subject gives ``p_corrupt``
exactly.

Two implementations give the same numbers:

* :func:`trace_reference` runs ROME's batch of ``S + 1`` copies (copy 0 clean) for every
  ``(token, layer)`` from the first layer.
* :func:`trace` (the default) uses the structure of the intervention: a restoration at layer
  ``l`` and token ``t`` leaves every layer below ``l`` unchanged and every position before the
  subject untouched, so it starts from the cached corrupted residual at layer ``l``, runs only the
  blocks above it, reads only the last position's logits, and batches all tokens of one layer
  (window) in one pass.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> r = trace(lm, "The Eiffel Tower is located in the city of", "Eiffel Tower",
    ...           CausalTracingConfig(kinds="hidden", noise_sigma=1.0))
    >>> r.scores["hidden"].shape == (r.n_tokens, lm.n_layers)
    True
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import torch

from precompute.facts import (
    TOKEN_GROUPS,
    FactPrompt,
    fact_check_row,
    fact_parts,
    prompt_row,
    split_marked,
    window_layers,
)
from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.model.replay import forward
from precompute.model.tracing import (
    KIND_HOOK,
    KINDS,
    CausalTracingConfig,
    TraceCancelled,
    TraceResult,
    embedding_sigma,
    mean_prob,
    noise_hook,
    prepare,
    reference_sigma,
    result,
    token_groups,
    trace,
    trace_frames,
    traced_positions,
)
from precompute.types import Item, RunContext

__all__ = [
    "KINDS",
    "CausalTracingConfig",
    "TraceCancelled",
    "TraceResult",
    "embedding_sigma",
    "reference_sigma",
    "token_groups",
    "trace",
    "trace_reference",
    "tried_order",
    "window_layers",
]

log = logging.getLogger(__name__)


@torch.inference_mode()
def trace_reference(
    lm: LoadedModel,
    prompt: str,
    subject: str | None,
    cfg: CausalTracingConfig | None = None,
    answer: str | None = None,
    char_span: tuple[int, int] | None = None,
) -> TraceResult:
    """ROME's algorithm: for every (token, layer), a batch of ``S + 1`` copies from the first layer.

    Copy 0 is clean; copies 1..S get the same noise for every restoration, and the restored state
    of copies 1..S is overwritten with copy 0's value in place (METHODS.md B1 steps 2-7). Every
    forward pass is one locked replay step.
    """
    cfg = cfg or CausalTracingConfig()
    kinds = cfg.kind_list()
    t0 = time.perf_counter()
    setup, _ = prepare(lm, prompt, subject, cfg, char_span)
    S, L = cfg.samples, lm.n_layers
    window = cfg.window_for(L)
    n_tok = setup.fact.n_tokens
    batch = setup.ids.repeat(S + 1, 1)  # (S+1, T)
    noise = ("hook_embed", noise_hook(setup, 1))
    logits = forward(lm, batch, fwd_hooks=[noise])
    p_corrupt = float(mean_prob(logits[1:, -1], setup.answer_id, S)[0])
    scores = {k: torch.full((n_tok, L), float("nan")) for k in kinds}
    for kind in kinds:
        for t in traced_positions(cfg, n_tok, setup.fact.start, setup.fact.end):
            for layer in range(L):
                span = (
                    range(layer, layer + 1) if kind == "hidden" else window_layers(layer, window, L)
                )
                fn = _restore_copies(t)
                hooks = [noise] + [(f"blocks.{i}.{KIND_HOOK[kind]}", fn) for i in span]
                out = forward(lm, batch, fwd_hooks=hooks)
                scores[kind][t, layer] = float(mean_prob(out[1:, -1], setup.answer_id, S)[0])
    return result(lm, setup, p_corrupt, scores, answer, t0, window)


def _restore_copies(t: int):
    def restore(x, hook=None):  # (S+1, T, D): copies 1..S take copy 0's state at t
        x[1:, t] = x[0, t]
        return x

    return restore


# ---------------------------------------------------------------------------------------------
# Rows


def trace_records(r: TraceResult, n_layers: int, prompt_id: str, cfg: CausalTracingConfig) -> list:
    """Metric records of one trace.

    * per cell (``position = t``, ``grp`` = token group): ``p_restored`` and ``indirect_effect``;
    * per token group and layer (``position = -1``, so ``metrics_agg`` averages over facts, each
      fact's middle / further tokens averaged first): ``indirect_effect`` and ``p_restored``;
      only for facts whose corruption worked (``TraceResult.corruption_ok``), so a fact the
      noise does not hurt is counted but not averaged in;
    * per fact (``layer_kind = fact``): ``p_clean``, ``p_corrupt``, ``total_effect``,
      ``correct``, ``noise_sigma``, ``subject_start``, ``subject_end``, ``window`` and
      ``corruption_ok`` (1 / 0: its mean times its n counts the facts left out).
    """
    groups = r.groups()
    recs = []
    base = dict(prompt_id=prompt_id, layer_kind="block", n_layers=n_layers)
    for kind, grid in r.scores.items():
        for t in range(r.n_tokens):
            for layer in range(n_layers):
                p = float(grid[t, layer])
                if p != p:  # not traced (token_range)
                    continue
                recs.append(
                    dict(
                        base,
                        variant=kind,
                        position=t,
                        grp=groups[t],
                        layer=layer,
                        metric="p_restored",
                        value=p,
                        unit="prob",
                    )
                )
                recs.append(
                    dict(
                        base,
                        variant=kind,
                        position=t,
                        grp=groups[t],
                        layer=layer,
                        metric="indirect_effect",
                        value=p - r.p_corrupt,
                        unit="prob",
                    )
                )
        for g in TOKEN_GROUPS if r.corruption_ok else ():
            rows = [t for t in range(r.n_tokens) if groups[t] == g]
            if not rows:
                continue
            vals = grid[rows].nanmean(0)  # (L,)
            for layer in range(n_layers):
                v = float(vals[layer])
                if v != v:
                    continue
                for metric, value in (("indirect_effect", v - r.p_corrupt), ("p_restored", v)):
                    recs.append(
                        dict(
                            base,
                            variant=kind,
                            position=-1,
                            grp=g,
                            layer=layer,
                            metric=metric,
                            value=value,
                            unit="prob",
                        )
                    )
    recs += fact_records(r, n_layers, prompt_id)
    return recs


def fact_records(r: TraceResult, n_layers: int, prompt_id: str) -> list[dict]:
    """Per-fact scalars (``layer_kind = fact``, ``layer = 0``)."""
    b, e = r.subject_range
    vals = {
        "p_clean": (r.p_clean, "prob"),
        "p_corrupt": (r.p_corrupt, "prob"),
        "total_effect": (r.p_clean - r.p_corrupt, "prob"),
        "noise_sigma": (r.sigma, "norm"),
        "subject_start": (b, "count"),
        "subject_end": (e, "count"),
        "answer_id": (r.answer_id, "count"),
        "window": (r.window, "count"),
        "corruption_ok": (float(r.corruption_ok), "fraction"),
    }
    if r.correct is not None:
        vals["correct"] = (float(r.correct), "fraction")
    return [
        dict(
            prompt_id=prompt_id,
            variant="",
            position=-1,
            grp="",
            layer=0,
            layer_kind="fact",
            n_layers=n_layers,
            metric=m,
            value=float(v),
            unit=u,
        )
        for m, (v, u) in vals.items()
    ]


def tried_order(items: list[Item], cfg: CausalTracingConfig, offset: int = 0) -> list[Item]:
    """The facts to try, in the order tried.

    ``items[::stride]`` of the whole dataset (``offset``: the dataset index of ``items[0]``);
    with ``order = relations`` then round-robin over the relations (``fields["relation"]``) in
    order of first appearance: every relation's first fact, then every relation's second, ...
    (a file ordered by relation still gives facts of many relations first).
    """
    stride = max(1, cfg.stride)
    kept = [it for i, it in enumerate(items) if (offset + i) % stride == 0]
    if cfg.order == "file":
        return kept
    if cfg.order != "relations":
        raise ValueError(f"Unknown order {cfg.order!r}; use relations or file.")
    groups: dict[str, list[Item]] = {}
    for it in kept:
        groups.setdefault(str(it.fields.get("relation", "")), []).append(it)
    queues = list(groups.values())
    longest = max((len(q) for q in queues), default=0)
    return [q[i] for i in range(longest) for q in queues if i < len(q)]


def process(
    lm: LoadedModel, items: list[Item], cfg: CausalTracingConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Trace each fact the model answers correctly; record correctness for every fact tried.

    Facts are tried in :func:`tried_order` until ``n_correct`` were answered correctly and
    traced (0: no limit). A wrong answer is found by the clean and corrupted runs (the first
    frame of :func:`trace_frames`) and costs no restoration.
    """
    recs, prompts, checks = [], [], []
    kept = 0
    for item in tried_order(items, cfg, ctx.offset):
        if cfg.n_correct > 0 and kept >= cfg.n_correct:
            break
        _, subject, gold, _ = fact_parts(item)
        frames = trace_frames(lm, item.text, subject, cfg, gold or None, coarse_first=False)
        try:
            fr = next(frames)
        except ValueError as err:
            log.warning("skipping %s: %s", item.prompt_id, err)
            continue
        if fr.result.correct is False:  # recorded, not traced further (ROME keeps correct facts)
            frames.close()
            r = fr.result
            r.scores = {}
        else:
            for fr in frames:
                pass
            r = fr.result
            kept += r.correct is True
        recs += trace_records(r, lm.n_layers, item.prompt_id, cfg)
        prompts.append(prompt_row(lm, ctx, item.prompt_id, item.text, r.ids))
        fact = FactPrompt(item.text, subject, r.ids[None], *r.subject_range)
        checks.append(fact_check_row(lm, ctx, item, fact, r.answer_id, r.p_clean))
    df = ctx.metrics(recs)
    if len(df):
        df.loc[df["layer_kind"] == "fact", "rel_depth"] = 0.0
    out = {"metrics": df}
    if prompts:
        out["prompts"] = pd.DataFrame(prompts)
        out["fact_checks"] = pd.DataFrame(checks)
    return out


def run_one(lm: LoadedModel, prompt: str, cfg: CausalTracingConfig) -> pd.DataFrame:
    """Tidy rows for one prompt whose subject is marked in brackets (``run-one``)."""
    text, subject = split_marked(prompt)
    r = trace(lm, text, subject, cfg)
    return result_frame(lm, r)


def result_frame(lm: LoadedModel, r: TraceResult) -> pd.DataFrame:
    """Per-cell rows of a trace (for live heatmaps): kind, position, token, layer, p_restored."""
    groups = r.groups()
    rows = []
    for kind, grid in r.scores.items():
        for t in range(r.n_tokens):
            for layer in range(lm.n_layers):
                rows.append(
                    dict(
                        kind=kind,
                        position=t,
                        input_token=r.tokens[t],
                        grp=groups[t],
                        layer=layer,
                        rel_depth=layer / max(lm.n_layers - 1, 1),
                        p_restored=float(grid[t, layer]),
                        indirect_effect=float(grid[t, layer]) - r.p_corrupt,
                        subject=r.subject_range[0] <= t < r.subject_range[1],
                        p_clean=r.p_clean,
                        p_corrupt=r.p_corrupt,
                        answer=r.answer,
                    )
                )
    return pd.DataFrame(rows)


METHOD = Method(
    name="causal_tracing",
    summary="Causal tracing (ROME): restore clean states into a subject-corrupted run.",
    config_cls=CausalTracingConfig,
    dataset="facts",
    process=process,
    run_one=run_one,
    chunk_size=None,  # n_correct and the relation round-robin need the whole file
)
