"""Logit lens (METHODS.md A1-A2): what each residual state would predict if the model stopped there.

Each state ``h_i`` (``i = 0..L``) is read by :mod:`precompute.lenses.readout`: the model's own
final norm with its statistics recomputed on ``h_i`` (the true lens; ``variant=cached_final_scale``
reproduces older TransformerLens), and the unembedding. Compared with the model's real output
distribution ``p_final`` per position:

* ``kl_to_final`` = KL(p_final || p_i) in nats, ``ce_to_final`` = H(p_final) + KL,
* ``entropy`` of ``p_i`` in nats, ``ce_next_token`` = -log p_i(next token),
* ``top1_matches_final``, ``top1_is_input`` (the lens repeats the input token, seed 000),
* ``prob_final_top1`` and ``rank_final_top1`` (1 + #tokens with strictly higher probability).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> df = run_one(lm, "the cat sat on the mat", LogitLensConfig())
    >>> int(df["layer"].max()) == lm.n_layers
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from precompute.lenses.readout import LensReadout, doc_records, lens_from_states, lens_readout
from precompute.methods import Method
from precompute.model.internals import NORM_VARIANTS, residual_states
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext


@dataclass(frozen=True)
class LogitLensConfig(BaseConfig):
    """Defaults: K = 10 (GEVA tables), recomputed norm (METHODS.md A1).

    ``n_items`` = 200 documents and ``max_tokens`` = 512 are the teaching defaults of METHODS.md
    A2 (ours; seed 000 states none). The embedded CPU results use smaller values, recorded in
    their config.
    ``variant`` may be ``both`` to compute the two norm variants from one forward pass.
    """

    RENAMED: ClassVar[dict[str, str]] = {"n_docs": "n_items"}

    k: int = 10
    variant: str = "recompute_ln"
    max_tokens: int = 512
    n_items: int = 200
    chunk_elems: int = 2**26


def token_records(r: LensReadout, n_layers: int, variant: str, prompt_id: str) -> list[dict]:
    """Per-(state, position) rows for heatmaps: every position, every state."""
    recs = []
    per_cell = {
        "kl_to_final": ("nats", r.kl),
        "entropy": ("nats", r.entropy),
        "top1_prob": ("prob", r.topk_probs[..., 0]),
        "prob_final_top1": ("prob", r.prob_final),
        "rank_final_top1": ("rank", r.rank_final.float()),
    }
    for metric, (unit, t) in per_cell.items():
        arr = t.float().tolist()
        for i, row in enumerate(arr):
            for pos, val in enumerate(row):
                recs.append(
                    dict(
                        prompt_id=prompt_id,
                        variant=variant,
                        position=pos,
                        layer=i,
                        layer_kind="resid",
                        n_layers=n_layers,
                        metric=metric,
                        value=val,
                        unit=unit,
                    )
                )
    return recs


def topk_frame(
    lm: LoadedModel, r: LensReadout, ctx: RunContext, variant: str, prompt_id: str
) -> pd.DataFrame:
    """Top-k tokens per (state, position), long."""
    n_states, n_pos, k = r.topk_ids.shape
    ids = r.topk_ids.reshape(-1).tolist()
    uniq = {i: lm.tokenizer.decode([i]) for i in set(ids)}
    inputs = lm.token_strs(r.ids)
    layer = torch.arange(n_states).repeat_interleave(n_pos * k)
    pos = torch.arange(n_pos).repeat_interleave(k).repeat(n_states)
    return pd.DataFrame(
        {
            "model": ctx.model,
            "method": ctx.method,
            "variant": variant,
            "dataset": ctx.dataset,
            "prompt_id": prompt_id,
            "position": pos.numpy(),
            "input_token": [inputs[p] for p in pos.tolist()],
            "layer": layer.numpy(),
            "rel_depth": (layer / (n_states - 1)).numpy(),
            "k": torch.arange(1, k + 1).repeat(n_states * n_pos).numpy(),
            "token_id": ids,
            "token_str": [uniq[i] for i in ids],
            "prob": r.topk_probs.reshape(-1).numpy(),
            "run_id": ctx.run_id,
        }
    )


def prompt_frame(lm: LoadedModel, ctx: RunContext, item: Item, ids: torch.Tensor) -> pd.DataFrame:
    """One ``prompts`` row: the prompt as this model tokenised it."""
    toks = lm.token_strs(ids)
    return pd.DataFrame(
        [
            dict(
                model=ctx.model,
                dataset=ctx.dataset,
                prompt_id=item.prompt_id,
                text=item.text,
                n_tokens=len(toks),
                tokens_json=json.dumps(toks),
                run_id=ctx.run_id,
            )
        ]
    )


def process(
    lm: LoadedModel, items: list[Item], cfg: LogitLensConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: per-document layer curves; for the example prompts also per-token read-outs."""
    variants = [cfg.variant] if cfg.variant != "both" else list(NORM_VARIANTS)
    detailed = ctx.dataset == "examples"
    metrics, topk, prompts = [], [], []
    for item in items:
        ids = lm.tokenize(item.text, max_tokens=cfg.max_tokens)  # (1, T)
        if ids.shape[1] < 2:
            continue
        states, logits = residual_states(lm, ids)
        for variant in variants:
            r = lens_from_states(lm, states, logits, ids[0], cfg.k, variant, cfg.chunk_elems)
            recs = doc_records(r, lm.n_layers, variant, item.prompt_id)
            if detailed:
                recs += token_records(r, lm.n_layers, variant, item.prompt_id)
                topk.append(topk_frame(lm, r, ctx, variant, item.prompt_id))
            metrics.append(ctx.metrics(recs))
        prompts.append(prompt_frame(lm, ctx, item, ids[0]))
    out = {"metrics": pd.concat(metrics) if metrics else ctx.metrics([])}
    if prompts:
        out["prompts"] = pd.concat(prompts)
    if topk:
        out["lens_topk"] = pd.concat(topk)
    return out


def run_one(lm: LoadedModel, prompt: str, cfg: LogitLensConfig) -> pd.DataFrame:
    """Tidy rows for one prompt: per (layer, position) metrics, with the lens's top-1 token."""
    ids = lm.tokenize(prompt, max_tokens=cfg.max_tokens)
    r = lens_readout(lm, ids, k=cfg.k, variant=cfg.variant)
    ctx = RunContext(model=lm.name, method="logit_lens", dataset="live")
    df = ctx.metrics(token_records(r, lm.n_layers, cfg.variant, "live"))
    top1 = r.topk_ids[..., 0]  # (S, T)
    strs = {i: lm.tokenizer.decode([i]) for i in set(top1.flatten().tolist())}
    df["token"] = [strs[int(top1[layer, pos])] for layer, pos in zip(df["layer"], df["position"])]
    inputs = lm.token_strs(ids)
    df["input_token"] = [inputs[p] for p in df["position"]]
    return df


METHOD = Method(
    name="logit_lens",
    summary="Logit lens: KL to final, entropy, top-1 agreement and input repetition per layer.",
    config_cls=LogitLensConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=8,
    extra_datasets=("examples",),
)
