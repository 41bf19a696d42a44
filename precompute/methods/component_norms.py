"""Attention and MLP output norms per layer and their ratio (METHODS.md D2; definition ours).

What each sublayer writes into the residual stream is read at the bridge hooks
``blocks.{i}.hook_attn_out`` and ``blocks.{i}.hook_mlp_out`` (so that, sequential or parallel,
``resid_post = resid_pre + attn_out + mlp_out``; for Gemma the hooks sit after the extra
post-norms).
Per token at positions ``>= 1`` (BOS/first-token norms are huge) the L2 norms are taken inside the
hooks, then per document and layer:

* ``attn_out_norm`` = mean ‖attn_out‖, ``mlp_out_norm`` = mean ‖mlp_out‖ (unit ``norm``);
* ``attn_mlp_ratio`` = mean ‖attn_out‖ / mean ‖mlp_out‖ (``variant = ratio_of_means``), and the
  mean of per-token ratios (``variant = mean_of_ratios``).

Weights are the model's own (no TransformerLens centring of writing weights, which would change
LayerNorm models' norms; RMSNorm models are unaffected by that preprocessing anyway).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-neox")
    >>> norms = token_norms(lm, lm.tokenize("the cat sat on the mat"))
    >>> norms["attn"].shape == (lm.n_layers, 6)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext

HOOKS = {"attn": "blocks.{i}.hook_attn_out", "mlp": "blocks.{i}.hook_mlp_out"}


@dataclass(frozen=True)
class ComponentNormsConfig(BaseConfig):
    """Defaults: 16 WikiText-2 documents cut to 128 tokens (ours: CPU budget; LAD uses 100)."""

    RENAMED: ClassVar[dict[str, str]] = {"n_docs": "n_items"}

    max_tokens: int = 128
    n_items: int = 16


@torch.inference_mode()
def token_norms(lm: LoadedModel, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward pass: the L2 norm of each sublayer's write at every position.

    Args:
        lm: Loaded model.
        ids: ``(1, T)`` token ids.

    Returns:
        ``{"attn": (L, T), "mlp": (L, T)}`` norms (float32).
    """
    n_pos = ids.shape[1]
    out = {k: torch.full((lm.n_layers, n_pos), float("nan")) for k in HOOKS}

    def make_hook(kind: str, layer: int):
        def hook(x, hook=None):
            out[kind][layer] = x[0].float().norm(dim=-1).cpu()  # (T, D) -> (T,)
            return x

        return hook

    hooks = [
        (tmpl.format(i=i), make_hook(kind, i))
        for kind, tmpl in HOOKS.items()
        for i in range(lm.n_layers)
    ]
    with lm.lock:
        lm.bridge.run_with_hooks(ids, fwd_hooks=hooks)
    if torch.isnan(out["attn"]).any() or torch.isnan(out["mlp"]).any():
        raise RuntimeError(f"Some attention/MLP output hooks did not fire on {lm.name}.")
    return out


def layer_summary(norms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-layer statistics over positions ``>= 1``.

    Args:
        norms: ``{"attn": (L, T), "mlp": (L, T)}`` from ``token_norms``.

    Returns:
        ``attn_out_norm, mlp_out_norm, ratio_of_means, mean_of_ratios``, each ``(L,)``.

    Raises:
        ValueError: Fewer than two positions (nothing left after dropping position 0).
    """
    attn, mlp = norms["attn"][:, 1:], norms["mlp"][:, 1:]  # (L, T-1)
    if attn.shape[1] == 0:
        raise ValueError("Component norms need at least two tokens (position 0 is excluded).")
    a, m = attn.mean(-1), mlp.mean(-1)  # (L,)
    tiny = torch.finfo(torch.float32).tiny
    return {
        "attn_out_norm": a,
        "mlp_out_norm": m,
        "ratio_of_means": a / m.clamp_min(tiny),
        "mean_of_ratios": (attn / mlp.clamp_min(tiny)).mean(-1),
    }


def doc_records(summary: dict[str, torch.Tensor], n_layers: int, prompt_id: str) -> list[dict]:
    """Rows of the ``metrics`` table for one document."""
    spec = [
        ("attn_out_norm", "", "attn_out_norm", "norm"),
        ("mlp_out_norm", "", "mlp_out_norm", "norm"),
        ("attn_mlp_ratio", "ratio_of_means", "ratio_of_means", "ratio"),
        ("attn_mlp_ratio", "mean_of_ratios", "mean_of_ratios", "ratio"),
    ]
    recs = []
    for metric, variant, key, unit in spec:
        for layer, val in enumerate(summary[key].tolist()):
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
    lm: LoadedModel, items: list[Item], cfg: ComponentNormsConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: per-document, per-layer norms (one-token documents are skipped)."""
    recs = []
    for item in items:
        ids = lm.tokenize(item.text, max_tokens=cfg.max_tokens)
        if ids.shape[1] < 2:
            continue
        recs += doc_records(layer_summary(token_norms(lm, ids)), lm.n_layers, item.prompt_id)
    return {"metrics": ctx.metrics(recs)}


def run_one(lm: LoadedModel, prompt: str, cfg: ComponentNormsConfig) -> pd.DataFrame:
    """Per-layer norms of one prompt.

    Raises:
        ValueError: A one-token prompt.
    """
    ids = lm.tokenize(prompt, max_tokens=cfg.max_tokens)
    if ids.shape[1] < 2:
        raise ValueError("The prompt has one token; component norms need at least two.")
    ctx = RunContext(model=lm.name, method="component_norms", dataset="live")
    return ctx.metrics(doc_records(layer_summary(token_norms(lm, ids)), lm.n_layers, "live"))


METHOD = Method(
    name="component_norms",
    summary="Attention and MLP output norms per layer and their ratio (positions >= 1).",
    config_cls=ComponentNormsConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=8,
)
