"""RSA arithmetic, pure numpy (no torch): RDMs, Spearman between RDMs, depth-grid resampling.

The method (``precompute.methods.rsa``) computes RDMs from a model's states with these functions;
the app compares two models' *stored* RDMs with :func:`cross_model_similarity` while a page
renders, so this module must stay free of model code (METHODS.md E3; Kriegeskorte 2008).

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(6, 5))
    >>> r = rdm(x)
    >>> bool(np.allclose(r, r.T)) and bool((np.diag(r) == 0).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

DISTANCES = ("cosine", "correlation")
NORMALISATIONS = ("none", "l2", "center", "zscore")
MIN_STIMULI = 4  # 6 upper-triangle entries: the least that gives a meaningful rank correlation


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
