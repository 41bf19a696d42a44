"""Attention locality (METHODS.md D1): how much attention goes to the previous five tokens.

The detokenisation signature of Lad et al. (2024): early heads attend locally, to the few tokens
just before the query. Per layer, from the pattern ``A[h, q, k]`` (hook
``blocks.{i}.attn.hook_pattern``, reduced inside the hook so no ``L·H·T²`` cache is ever held):

* ``prev5_mean_weight`` (LAD code-faithful): the mean of every entry on the sub-diagonals at
  offsets ``1..k`` of every head, ``A[h, q, q-d]`` -- the average weight on *one* of the previous
  ``k`` tokens (about mass / k). BOS is included (offset 1 at query 1 reads key 0), as in LAD's
  code.
* ``prev5_mass_fraction`` (ours, the paper's wording): ``sum_{d=1..k} A[h, q, q-d]``, averaged over
  heads and queries ``q >= k + 1`` (queries with ``k`` predecessors besides BOS).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> stats = layer_locality(lm, lm.tokenize("the cat sat on the mat and the dog sat on the log"))
    >>> sorted(stats[0])
    ['prev5_mass_fraction', 'prev5_mean_weight']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext

METRICS = {
    # metric: (variant, unit)
    "prev5_mean_weight": ("mean_weight", "prob"),
    "prev5_mass_fraction": ("mass_fraction", "fraction"),
}


@dataclass(frozen=True)
class AttentionLocalityConfig(BaseConfig):
    """Defaults: ``top_k = 5`` offsets [LAD]; 16 documents cut to 128 tokens (ours: CPU budget).

    LAD uses the first 100 Pile documents, GPT-2 truncated to 500 tokens (METHODS.md D1); we use
    WikiText-2 paragraphs.
    """

    RENAMED: ClassVar[dict[str, str]] = {"n_docs": "n_items"}

    top_k: int = 5
    max_tokens: int = 128
    n_items: int = 16


def min_tokens(top_k: int) -> int:
    """Shortest prompt with at least one query that has ``top_k`` predecessors besides BOS."""
    return top_k + 2


@torch.inference_mode()
def locality_stats(pattern: torch.Tensor, top_k: int = 5) -> dict[str, float]:
    """Both D1 statistics of one layer's attention pattern.

    Args:
        pattern: ``(H, T, T)`` attention weights, rows (queries) summing to 1.
        top_k: Number of previous offsets ``d = 1..top_k``.

    Returns:
        ``{"prev5_mean_weight": ..., "prev5_mass_fraction": ...}``; the mass fraction is NaN when
        ``T < top_k + 2`` (no query has enough predecessors).
    """
    if pattern.ndim != 3 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"Expected a (heads, T, T) pattern, got shape {tuple(pattern.shape)}.")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    a = pattern.float()
    n_pos = a.shape[-1]
    diags = [a.diagonal(offset=-d, dim1=-2, dim2=-1) for d in range(1, min(top_k, n_pos - 1) + 1)]
    # diags[d-1]: (H, T-d), entry j is A[h, j+d, j]
    entries = torch.cat([x.reshape(-1) for x in diags]) if diags else a.new_empty(0)
    mean_weight = float(entries.nanmean()) if entries.numel() else float("nan")
    q0 = top_k + 1
    if n_pos <= q0:
        return {"prev5_mean_weight": mean_weight, "prev5_mass_fraction": float("nan")}
    # mass on offsets 1..k for queries q >= q0: sum_d A[h, q, q-d] = sum_d diags[d-1][:, q-d]
    mass = sum(x[:, q0 - d :] for d, x in enumerate(diags, start=1))  # (H, T-q0)
    return {"prev5_mean_weight": mean_weight, "prev5_mass_fraction": float(mass.nanmean())}


def pattern_hook_name(layer: int) -> str:
    """Return the bridge hook holding layer ``layer``'s attention pattern ``(1, H, T, T)``."""
    return f"blocks.{layer}.attn.hook_pattern"


@torch.inference_mode()
def layer_locality(lm: LoadedModel, ids: torch.Tensor, top_k: int = 5) -> list[dict[str, float]]:
    """One forward pass; both statistics for every layer, reduced inside the hooks.

    Args:
        lm: Loaded model.
        ids: ``(1, T)`` token ids.
        top_k: Previous offsets counted.

    Returns:
        One dict per layer (see ``locality_stats``).
    """
    out: list[dict[str, float] | None] = [None] * lm.n_layers

    def make_hook(layer: int):
        def hook(pattern, hook=None):
            out[layer] = locality_stats(pattern[0], top_k)  # (H, T, T) -> two floats
            return pattern

        return hook

    hooks = [(pattern_hook_name(i), make_hook(i)) for i in range(lm.n_layers)]
    with lm.lock:
        lm.bridge.run_with_hooks(ids, fwd_hooks=hooks)
    missing = [i for i, s in enumerate(out) if s is None]
    if missing:
        raise RuntimeError(f"No attention pattern was seen for layers {missing} of {lm.name}.")
    return out  # type: ignore[return-value]


@torch.inference_mode()
def attention_pattern(lm: LoadedModel, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """Return the attention pattern ``(H, T, T)`` of one layer for one prompt (for live panels).

    Raises:
        ValueError: ``layer`` out of range.
    """
    if not 0 <= layer < lm.n_layers:
        raise ValueError(
            f"Layer {layer} is out of range: {lm.name} has layers 0..{lm.n_layers - 1}."
        )
    name = pattern_hook_name(layer)
    with lm.lock:
        _, cache = lm.bridge.run_with_cache(ids, names_filter=lambda n: n == name)
    return cache[name][0].float()


def doc_records(stats: list[dict[str, float]], n_layers: int, prompt_id: str) -> list[dict]:
    """Rows of the ``metrics`` table for one document (NaN statistics are left out)."""
    recs = []
    for layer, s in enumerate(stats):
        for metric, (variant, unit) in METRICS.items():
            val = s[metric]
            if val != val:  # NaN: too short for this statistic
                continue
            recs.append(
                dict(
                    prompt_id=prompt_id,
                    variant=variant,
                    layer=layer,
                    layer_kind="block",
                    n_layers=n_layers,
                    metric=metric,
                    value=val,
                    unit=unit,
                )
            )
    return recs


def process(
    lm: LoadedModel, items: list[Item], cfg: AttentionLocalityConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: per-document, per-layer locality (documents too short are skipped)."""
    recs = []
    for item in items:
        ids = lm.tokenize(item.text, max_tokens=cfg.max_tokens)
        if ids.shape[1] < min_tokens(cfg.top_k):
            continue
        stats = layer_locality(lm, ids, cfg.top_k)
        # LAD skips documents whose values are all NaN or zero
        if all(v == 0 or v != v for s in stats for v in s.values()):
            continue
        recs += doc_records(stats, lm.n_layers, item.prompt_id)
    return {"metrics": ctx.metrics(recs)}


def run_one(lm: LoadedModel, prompt: str, cfg: AttentionLocalityConfig) -> pd.DataFrame:
    """Per-layer locality of one prompt.

    Raises:
        ValueError: The prompt has fewer than ``top_k + 2`` tokens.
    """
    ids = lm.tokenize(prompt, max_tokens=cfg.max_tokens)
    need = min_tokens(cfg.top_k)
    if ids.shape[1] < need:
        raise ValueError(
            f"The prompt has {ids.shape[1]} token(s); attention locality needs at least {need} "
            f"(a query with {cfg.top_k} previous tokens besides the first). Use a longer prompt."
        )
    ctx = RunContext(model=lm.name, method="attention_locality", dataset="live")
    return ctx.metrics(doc_records(layer_locality(lm, ids, cfg.top_k), lm.n_layers, "live"))


METHOD = Method(
    name="attention_locality",
    summary="Attention on the previous five tokens per layer (mean weight and mass fraction).",
    config_cls=AttentionLocalityConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=8,
)
