"""Representational similarity analysis across layers and models (METHODS.md E3; Kriegeskorte 2008).

For ``N`` stimuli, every residual state ``h_0..h_L`` gives one vector per stimulus (mean over
positions 1..T-1 by default, :func:`precompute.model.pooled.pooled_states`). Per state:

1. optional normalisation: ``l2`` per stimulus, ``center`` (subtract each feature's mean across
   stimuli: removes the common direction that dominates cosine similarity), or ``zscore``;
2. the RDM ``1 - cos`` (default) or ``1 - Pearson`` across features: ``N x N``, symmetric, zero
   diagonal;
3. layer x layer similarity: Spearman's rho between the strict upper triangles of two RDMs.

Within a model that gives an ``(L+1) x (L+1)`` matrix (table ``similarity``, ``model_a = model_b``).
The RDMs are stored long (table ``rdm``, strict upper triangle, stimuli sorted by id) so two models
run on the same stimuli can be compared later with :func:`cross_model_similarity` -- the app does
this on the fly, and :func:`resample_to_grid` puts any similarity matrix on a common relative-depth
grid.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(6, 5))
    >>> r = rdm(x)
    >>> bool(np.allclose(r, r.T)) and bool((np.diag(r) == 0).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.model.pooled import PooledStates, pooled_states
from precompute.stats.rsa import (  # noqa: F401 -- re-exported: the method's public API
    DISTANCES,
    MIN_STIMULI,
    NORMALISATIONS,
    cross_model_similarity,
    layer_similarity,
    normalise,
    rdm,
    resample_to_grid,
    spearman,
    upper,
)
from precompute.types import BaseConfig, Item, RunContext, rel_depth


@dataclass(frozen=True)
class RSAConfig(BaseConfig):
    """Defaults (METHODS.md E3, "ours": seed 000 gives none).

    Mean pooling without BOS, cosine RDM, no normalisation, Spearman comparison (E3 defaults).
    ``n_items`` = 80 and ``max_tokens`` = 128: ours (CPU budget; E3 suggests 100-200 stimuli).
    """

    RENAMED: ClassVar[dict[str, str]] = {"n_docs": "n_items"}

    n_items: int = 80
    max_tokens: int = 128
    pooling: str = "mean"
    distance: str = "cosine"
    normalise: str = "none"

    @property
    def variant(self) -> str:
        """``pooling|distance|normalise``, e.g. ``mean|cosine|none``."""
        return f"{self.pooling}|{self.distance}|{self.normalise}"


# ------------------------------------------------------------------------------------------------
# Rows


@dataclass
class RSAResult:
    """RDMs and the within-model similarity of one model on ``N`` stimuli (``S = L+1`` states)."""

    stimulus_ids: list[str]
    rdms: np.ndarray  # (S, N, N)
    similarity: np.ndarray  # (S, S)

    @property
    def rel_depth(self) -> np.ndarray:
        """``i / L`` of each state."""
        n_layers = len(self.rdms) - 1
        return np.array([rel_depth(i, "resid", n_layers) for i in range(n_layers + 1)])


def rsa_from_pooled(ps: PooledStates, ids: Sequence[str], cfg: RSAConfig) -> RSAResult:
    """RDMs of every state and their layer x layer similarity, from already pooled states.

    Stimuli are put in sorted id order, so results of two models on the same stimuli line up.
    """
    if len(set(ids)) != len(ids):
        raise ValueError("Stimulus ids must be unique: a duplicate stimulus id was given.")
    order = np.argsort(np.asarray(ids, dtype=object))
    arr = ps.pooled(cfg.pooling)[:, order]  # (S, N, D)
    rdms = np.stack([rdm(x, cfg.distance, cfg.normalise) for x in arr])  # (S, N, N)
    return RSAResult([ids[i] for i in order], rdms, layer_similarity(rdms))


def rdm_frame(res: RSAResult, cfg: RSAConfig, ctx: RunContext) -> pd.DataFrame:
    """Build the ``rdm`` rows: the strict upper triangle of every state's RDM."""
    n_states, n = res.rdms.shape[:2]
    i, j = np.triu_indices(n, k=1)
    ids = np.asarray(res.stimulus_ids, dtype=object)
    layer = np.repeat(np.arange(n_states), len(i))
    return pd.DataFrame(
        {
            "model": ctx.model,
            "method": ctx.method,
            "variant": cfg.variant,
            "dataset": ctx.dataset,
            "layer": layer,
            "n_layers": n_states - 1,
            "rel_depth": res.rel_depth[layer],
            "stimulus_a": np.tile(ids[i], n_states),
            "stimulus_b": np.tile(ids[j], n_states),
            "value": res.rdms[:, i, j].reshape(-1),
            "run_id": ctx.run_id,
        }
    )


def similarity_frame(
    sim: np.ndarray,
    model_a: str,
    model_b: str,
    depth_a: np.ndarray,
    depth_b: np.ndarray,
    n_stimuli: int,
    cfg: RSAConfig,
    ctx: RunContext,
) -> pd.DataFrame:
    """Long rows of a layer x layer similarity matrix (``similarity`` table)."""
    sa, sb = sim.shape
    la, lb = np.repeat(np.arange(sa), sb), np.tile(np.arange(sb), sa)
    return pd.DataFrame(
        {
            "model": ctx.model,
            "method": ctx.method,
            "variant": cfg.variant,
            "dataset": ctx.dataset,
            "model_a": model_a,
            "model_b": model_b,
            "layer_a": la,
            "layer_b": lb,
            "rel_depth_a": np.asarray(depth_a)[la],
            "rel_depth_b": np.asarray(depth_b)[lb],
            "similarity": cfg.distance,
            "compare": "spearman",
            "n_stimuli": n_stimuli,
            "value": sim.reshape(-1),
            "run_id": ctx.run_id,
        }
    )


def process(
    lm: LoadedModel, items: list[Item], cfg: RSAConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: one pass per stimulus; RDMs (long) and the within-model similarity."""
    texts = [it.text for it in items]
    if len(set(texts)) != len(texts):
        raise ValueError("Duplicate stimuli (identical texts): RSA needs distinct stimuli.")
    ps = pooled_states(lm, texts, cfg.max_tokens)
    res = rsa_from_pooled(ps, [it.prompt_id for it in items], cfg)
    d = res.rel_depth
    n = len(res.stimulus_ids)
    return {
        "rdm": rdm_frame(res, cfg, ctx),
        "similarity": similarity_frame(res.similarity, lm.name, lm.name, d, d, n, cfg, ctx),
    }


def live_rsa(lm: LoadedModel, sentences: Sequence[str], cfg: RSAConfig) -> RSAResult:
    """RSA of a student's sentences on the live model (same functions as precompute)."""
    sents = [s.strip() for s in sentences if s.strip()]
    if len(set(sents)) != len(sents):
        raise ValueError("Two sentences are identical: enter distinct sentences.")
    if len(sents) < MIN_STIMULI:
        raise ValueError(f"RSA needs at least {MIN_STIMULI} sentences; got {len(sents)}.")
    ps = pooled_states(lm, sents, cfg.max_tokens)
    return rsa_from_pooled(ps, [f"s{i:02d}" for i in range(len(sents))], cfg)


def run_one(lm: LoadedModel, prompt: str, cfg: RSAConfig) -> pd.DataFrame:
    """``prompt`` holds one stimulus per line; returns the layer x layer similarity rows."""
    res = live_rsa(lm, prompt.splitlines(), cfg)
    ctx = RunContext(model=lm.name, method="rsa", dataset="live")
    d = res.rel_depth
    return similarity_frame(res.similarity, lm.name, lm.name, d, d, len(res.stimulus_ids), cfg, ctx)


METHOD = Method(
    name="rsa",
    summary="RSA: per-layer RDMs (cosine, mean pooling) and layer x layer Spearman similarity.",
    config_cls=RSAConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=None,  # the RDM needs every stimulus at once
)
