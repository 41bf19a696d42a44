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

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.model.pooled import PooledStates, pooled_states
from precompute.types import BaseConfig, Item, RunContext, rel_depth

DISTANCES = ("cosine", "correlation")
NORMALISATIONS = ("none", "l2", "center", "zscore")
MIN_STIMULI = 4  # 6 upper-triangle entries: the least that gives a meaningful rank correlation


@dataclass(frozen=True)
class RSAConfig(BaseConfig):
    """Defaults (METHODS.md E3, "ours": seed 000 gives none).

    Mean pooling without BOS, cosine RDM, no normalisation, Spearman comparison (E3 defaults).
    ``n_docs`` = 80 and ``max_tokens`` = 128: ours (CPU budget; E3 suggests 100-200 stimuli).
    """

    n_docs: int = 80
    max_tokens: int = 128
    pooling: str = "mean"
    distance: str = "cosine"
    normalise: str = "none"

    @property
    def variant(self) -> str:
        """``pooling|distance|normalise``, e.g. ``mean|cosine|none``."""
        return f"{self.pooling}|{self.distance}|{self.normalise}"


def normalise(x: np.ndarray, how: str = "none") -> np.ndarray:
    """Normalise ``(N, D)`` stimulus vectors: ``none``, ``l2`` (rows), ``center``, ``zscore``."""
    if how not in NORMALISATIONS:
        raise ValueError(f"Unknown normalisation {how!r}; use one of {NORMALISATIONS}.")
    x = np.asarray(x, dtype=np.float64)
    if how == "l2":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError("A stimulus vector is all zeros: it cannot be L2-normalised.")
        return x / norms
    if how in ("center", "zscore"):
        x = x - x.mean(0)
        if how == "zscore":
            sd = x.std(0)
            x = x / np.where(sd > 0, sd, 1.0)  # constant features stay 0
    return x


def _check_stimuli(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"Expected stimulus vectors as an (N, D) array; got shape {x.shape}.")
    if len(x) < MIN_STIMULI:
        raise ValueError(f"RSA needs at least {MIN_STIMULI} stimuli; got {len(x)}.")
    if not np.isfinite(x).all():
        raise ValueError("The stimulus vectors contain NaN or infinite values.")
    _, first, counts = np.unique(x, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = int(first[np.argmax(counts > 1)])
        raise ValueError(
            f"{int((counts - 1).sum())} stimuli duplicate another one's representation (e.g. "
            f"stimulus {dup}): their dissimilarity would be 0. Remove duplicate stimuli."
        )
    return x


def rdm(x: np.ndarray, distance: str = "cosine", norm: str = "none") -> np.ndarray:
    """Representational dissimilarity matrix of ``(N, D)`` stimulus vectors.

    Args:
        x: One row per stimulus.
        distance: ``cosine`` (1 - cosine similarity) or ``correlation`` (1 - Pearson r across
            features).
        norm: Normalisation applied first (see :func:`normalise`).

    Returns:
        ``(N, N)`` symmetric, zero diagonal, float64.

    Raises:
        ValueError: Fewer than 4 stimuli, duplicate stimuli, a zero (cosine) or constant
            (correlation) vector, NaNs.
    """
    if distance not in DISTANCES:
        raise ValueError(f"Unknown distance {distance!r}; use one of {DISTANCES}.")
    x = normalise(_check_stimuli(x), norm)
    if distance == "correlation":
        x = x - x.mean(1, keepdims=True)  # centre each stimulus across features
    norms = np.linalg.norm(x, axis=1)  # (N,)
    if (norms <= 1e-12 * max(float(norms.max()), 1e-300)).any():
        what = "constant across features" if distance == "correlation" else "all zeros"
        raise ValueError(f"A stimulus vector is {what}: its {distance} distance is undefined.")
    u = x / norms[:, None]
    r = 1.0 - u @ u.T  # (N, N)
    r = (r + r.T) / 2
    np.fill_diagonal(r, 0.0)
    return np.clip(r, 0.0, 2.0)


def upper(r: np.ndarray) -> np.ndarray:
    """Return the strict upper triangle of a square matrix, row by row (``N(N-1)/2`` entries)."""
    i, j = np.triu_indices(len(r), k=1)
    return r[i, j]


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis, centred and scaled to unit norm (for Spearman)."""
    rk = rankdata(v, axis=-1)  # ties get the average rank
    rk = rk - rk.mean(-1, keepdims=True)
    nrm = np.linalg.norm(rk, axis=-1, keepdims=True)
    if (nrm == 0).any():
        raise ValueError("An RDM has all-equal entries: its rank correlation is undefined.")
    return rk / nrm


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two vectors (Pearson of average ranks), as ``scipy.stats.spearmanr``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"Need two 1-D vectors of equal length >= 2; got {a.shape}, {b.shape}.")
    return float(np.clip(_ranks(a) @ _ranks(b), -1.0, 1.0))


def layer_similarity(rdms_a: np.ndarray, rdms_b: np.ndarray | None = None) -> np.ndarray:
    """Spearman rho between every pair of RDMs.

    Args:
        rdms_a: ``(S_a, N, N)`` RDMs of one model's states.
        rdms_b: ``(S_b, N, N)`` RDMs of another model on the same stimuli, same order
            (``None``: ``rdms_a`` itself).

    Returns:
        ``(S_a, S_b)`` similarity, 1 on the diagonal of a within-model matrix.
    """
    ra = _ranks(np.stack([upper(r) for r in rdms_a]))  # (S_a, P)
    if rdms_b is None:
        rb = ra
    else:
        if rdms_b.shape[1:] != rdms_a.shape[1:]:
            raise ValueError(
                f"The two models' RDMs cover different stimuli ({rdms_a.shape[1]} vs "
                f"{rdms_b.shape[1]}): compare them on the same stimuli, sorted by id."
            )
        rb = _ranks(np.stack([upper(r) for r in rdms_b]))
    return np.clip(ra @ rb.T, -1.0, 1.0)


def resample_to_grid(
    sim: np.ndarray, depth_a: Sequence[float], depth_b: Sequence[float], grid: Sequence[float]
) -> np.ndarray:
    """Bilinear interpolation of a similarity matrix onto a common relative-depth grid.

    Args:
        sim: ``(S_a, S_b)`` similarity matrix.
        depth_a: Relative depth of each row (increasing).
        depth_b: Relative depth of each column (increasing).
        grid: Relative depths of the output rows and columns (in [0, 1]).

    Returns:
        ``(G, G)`` matrix.
    """
    da, db, g = (np.asarray(v, dtype=np.float64) for v in (depth_a, depth_b, grid))
    rows = np.stack([np.interp(g, db, row) for row in sim])  # (S_a, G): columns resampled
    return np.stack([np.interp(g, da, col) for col in rows.T], axis=1)  # (G, G)


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


def cross_model_similarity(rdm_a: pd.DataFrame, rdm_b: pd.DataFrame) -> pd.DataFrame:
    """Layer x layer similarity between two models from their stored ``rdm`` rows.

    Args:
        rdm_a: ``rdm`` rows of model A (one variant, one dataset): ``layer, rel_depth,
            stimulus_a, stimulus_b, value``.
        rdm_b: The same for model B.

    Returns:
        Rows ``layer_a, layer_b, rel_depth_a, rel_depth_b, value, n_stimuli`` over the stimuli
        both models saw (sorted by id).

    Raises:
        ValueError: Fewer than 4 shared stimuli.
    """

    def stims(df: pd.DataFrame) -> set[str]:
        return set(df["stimulus_a"]) | set(df["stimulus_b"])

    shared = sorted(stims(rdm_a) & stims(rdm_b))
    if len(shared) < MIN_STIMULI:
        raise ValueError(
            f"The two models share {len(shared)} stimuli; RSA needs at least {MIN_STIMULI}. "
            "Run both on the same dataset."
        )

    def vectors(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        keep = df[df["stimulus_a"].isin(shared) & df["stimulus_b"].isin(shared)]
        keep = keep.sort_values(["layer", "stimulus_a", "stimulus_b"])
        n_pairs = len(shared) * (len(shared) - 1) // 2
        wide = keep["value"].to_numpy().reshape(-1, n_pairs)  # (S, P), same pair order
        depth = keep.drop_duplicates("layer")["rel_depth"].to_numpy()
        return wide, depth

    va, da = vectors(rdm_a)
    vb, db = vectors(rdm_b)
    sim = np.clip(_ranks(va) @ _ranks(vb).T, -1.0, 1.0)  # (S_a, S_b)
    la, lb = np.repeat(np.arange(len(da)), len(db)), np.tile(np.arange(len(db)), len(da))
    return pd.DataFrame(
        {
            "layer_a": la,
            "layer_b": lb,
            "rel_depth_a": da[la],
            "rel_depth_b": db[lb],
            "value": sim.reshape(-1),
            "n_stimuli": len(shared),
        }
    )


METHOD = Method(
    name="rsa",
    summary="RSA: per-layer RDMs (cosine, mean pooling) and layer x layer Spearman similarity.",
    config_cls=RSAConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=None,  # the RDM needs every stimulus at once
)
