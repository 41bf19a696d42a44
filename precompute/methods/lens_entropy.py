"""Logit-lens entropy in bits per layer (METHODS.md A3; Lad et al. 2024 Fig. 8).

The model's "confidence" at each depth: every residual state ``h_0..h_L`` is read through the final
norm and the unembedding (``precompute.lenses.readout``, the same read-out as the logit lens) and
the entropy of the softmax is taken in **bits**, probabilities clamped at 1e-9 before the log (LAD
``entropy_calculation``). Per document: the first 500 *characters*, positions ``[1:-1]``, mean over
positions. Two variants, and the gap between them is a lesson about instruments:

* ``recompute_ln``: the norm's statistics are recomputed on each state (the true logit lens);
* ``cached_final_scale``: every state is divided by the *final* state's scale, as TransformerLens
  < 2.18 ``accumulated_resid(apply_ln=True)`` did -- what LAD's published curve used. Early states
  have smaller norms than the last, so their logits shrink and their entropy is inflated.

The two agree at ``i = L`` by construction. LAD drops ``b_U``; we keep the model's own unembedding
(with its bias where it has one, none for the offline models).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> h = doc_entropy(lm, lm.tokenize("the cat sat on the mat"))
    >>> h["recompute_ln"].shape == (lm.n_layers + 1,)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from precompute.lenses.readout import lens_logits
from precompute.methods import Method
from precompute.model.internals import (
    NORM_VARIANTS,
    is_layernorm,
    logit_softcap,
    norm_stats,
    residual_states,
    unembed_weights,
)
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext


@dataclass(frozen=True)
class LensEntropyConfig(BaseConfig):
    """Defaults: first 500 characters, positions [1:-1], bits, clamp 1e-9, 10 documents [LAD].

    LAD takes the first 10 Pile documents; we take the first 10 WikiText-2 paragraphs.
    ``max_tokens`` = 256 (ours) only guards against odd tokenisations (500 characters are ~120
    tokens).
    """

    RENAMED: ClassVar[dict[str, str]] = {"n_docs": "n_items"}

    max_chars: int = 500
    clamp: float = 1e-9
    n_items: int = 10
    max_tokens: int = 256
    variant: str = "both"
    chunk_elems: int = 2**25


def entropy_bits(logits: torch.Tensor, clamp: float = 1e-9) -> torch.Tensor:
    """Entropy in bits of ``softmax(logits)`` over the last axis, LAD style.

    Args:
        logits: ``(..., V)``.
        clamp: Probabilities are clamped to at least this before ``log2`` (0: exact entropy).

    Returns:
        ``(...)`` entropies; ``log2 V`` for uniform logits.
    """
    p = torch.softmax(logits.float(), -1)  # (..., V)
    if clamp > 0:
        return -(p * p.clamp_min(clamp).log2()).sum(-1)
    return -(p * torch.log_softmax(logits.float(), -1)).sum(-1) / math.log(2)


@torch.inference_mode()
def state_entropy(
    lm: LoadedModel,
    states: torch.Tensor,
    variant: str = "recompute_ln",
    clamp: float = 1e-9,
    chunk_elems: int = 2**25,
) -> torch.Tensor:
    """Lens entropy (bits) of every residual state at every position.

    Args:
        lm: Loaded model.
        states: ``(S, T, D)`` residual states, pre final norm; the last is ``h_L``.
        variant: ``recompute_ln`` or ``cached_final_scale``.
        clamp: See ``entropy_bits``.
        chunk_elems: Upper bound on logits held at once.

    Returns:
        ``(S, T)`` entropies in bits.
    """
    if variant not in NORM_VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; use one of {NORM_VARIANTS}.")
    n_states, n_pos, _ = states.shape
    step = max(1, chunk_elems // max(n_pos * lm.d_vocab, 1))
    out = []
    for s0 in range(0, n_states, step):
        z = lens_logits(lm, states[s0 : s0 + step], variant, final_state=states[-1])
        out.append(entropy_bits(z, clamp))  # (s, T)
    return torch.cat(out)


def scale_shortcut_ok(lm: LoadedModel) -> bool:
    """True when the cached-scale logits are the recomputed logits times a per-position factor.

    With an RMSNorm final norm (no bias), no unembedding bias and no logit soft-cap,
    ``cached_final_scale`` normalises to ``normed * r`` with ``r = rms(h_i) / rms(h_L)`` (see
    ``precompute.model.internals.final_norm``), so its logits are ``r * logits`` exactly: one
    unembedding serves both variants (the unembedding is the cost: ``T x D x V`` per state).
    """
    if is_layernorm(lm):
        return False
    _, bias = unembed_weights(lm)
    if bias is not None and bool(bias.detach().ne(0).any()):
        return False
    return not logit_softcap(lm)


@torch.inference_mode()
def both_entropies(
    lm: LoadedModel, states: torch.Tensor, clamp: float = 1e-9, chunk_elems: int = 2**25
) -> dict[str, torch.Tensor]:
    """Both variants' ``(S, T)`` entropies from one unembedding per state.

    Uses the exact shortcut of ``scale_shortcut_ok`` when it holds, else ``state_entropy`` twice.
    """
    if not scale_shortcut_ok(lm):
        return {v: state_entropy(lm, states, v, clamp, chunk_elems) for v in NORM_VARIANTS}
    n_states, n_pos, _ = states.shape
    step = max(1, chunk_elems // max(n_pos * lm.d_vocab, 1))
    ratio = norm_stats(lm, states) / norm_stats(lm, states[-1])  # (S, T, 1)
    out: dict[str, list[torch.Tensor]] = {v: [] for v in NORM_VARIANTS}
    for s0 in range(0, n_states, step):
        z = lens_logits(lm, states[s0 : s0 + step]).float()
        out["recompute_ln"].append(entropy_bits(z, clamp))  # (s, T)
        out["cached_final_scale"].append(entropy_bits(z * ratio[s0 : s0 + step], clamp))
    return {v: torch.cat(t) for v, t in out.items()}


def variants_of(cfg: LensEntropyConfig) -> list[str]:
    """List the variants a config asks for (``both`` = every norm variant)."""
    if cfg.variant == "both":
        return list(NORM_VARIANTS)
    if cfg.variant not in NORM_VARIANTS:
        raise ValueError(f"Unknown variant {cfg.variant!r}; use both or one of {NORM_VARIANTS}.")
    return [cfg.variant]


def doc_entropy(
    lm: LoadedModel, ids: torch.Tensor, cfg: LensEntropyConfig | None = None
) -> dict[str, torch.Tensor]:
    """One forward pass; the mean entropy over positions ``[1:-1]`` per state and variant.

    Args:
        lm: Loaded model.
        ids: ``(1, T)`` token ids, ``T >= 3``.
        cfg: Config (clamp, variants).

    Returns:
        ``{variant: (L+1,)}`` in bits.

    Raises:
        ValueError: Fewer than three tokens (nothing left after dropping the first and last).
    """
    cfg = cfg or LensEntropyConfig()
    if ids.shape[1] < 3:
        raise ValueError(
            f"The text has {ids.shape[1]} token(s); lens entropy drops the first and last "
            "position, so it needs at least 3."
        )
    variants = variants_of(cfg)
    states, _ = residual_states(lm, ids)  # (L+1, T, D)
    if len(variants) == len(NORM_VARIANTS):
        ent = both_entropies(lm, states, cfg.clamp, cfg.chunk_elems)
    else:
        ent = {v: state_entropy(lm, states, v, cfg.clamp, cfg.chunk_elems) for v in variants}
    return {v: e[:, 1:-1].mean(-1) for v, e in ent.items()}


def doc_records(ent: dict[str, torch.Tensor], n_layers: int, prompt_id: str) -> list[dict]:
    """Rows of the ``metrics`` table for one document."""
    return [
        dict(
            prompt_id=prompt_id,
            variant=variant,
            layer=i,
            layer_kind="resid",
            n_layers=n_layers,
            metric="entropy_bits",
            value=val,
            unit="bits",
        )
        for variant, values in ent.items()
        for i, val in enumerate(values.tolist())
    ]


def _ids(lm: LoadedModel, text: str, cfg: LensEntropyConfig) -> torch.Tensor:
    return lm.tokenize(text[: cfg.max_chars], max_tokens=cfg.max_tokens)


def process(
    lm: LoadedModel, items: list[Item], cfg: LensEntropyConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: per-document entropy curves, both variants (documents under 3 tokens skipped)."""
    variants_of(cfg)  # reject a bad variant before any work
    recs = []
    for item in items:
        ids = _ids(lm, item.text, cfg)
        if ids.shape[1] < 3:
            continue
        recs += doc_records(doc_entropy(lm, ids, cfg), lm.n_layers, item.prompt_id)
    return {"metrics": ctx.metrics(recs)}


def run_one(lm: LoadedModel, prompt: str, cfg: LensEntropyConfig) -> pd.DataFrame:
    """Per-state entropy of one prompt (its first ``max_chars`` characters), both variants."""
    ctx = RunContext(model=lm.name, method="lens_entropy", dataset="live")
    ent = doc_entropy(lm, _ids(lm, prompt, cfg), cfg)
    return ctx.metrics(doc_records(ent, lm.n_layers, "live"))


METHOD = Method(
    name="lens_entropy",
    summary="Logit-lens entropy in bits per layer, recomputed norm and cached final scale (LAD).",
    config_cls=LensEntropyConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=8,
)
