"""Intrinsic dimension of each layer's representations (METHODS.md E1).

One vector per stimulus and residual state ``h_0..h_L`` (mean over positions 1..T-1, or the last
token; :func:`precompute.model.pooled.pooled_states`), then per state:

* ``twonn`` (headline; Facco et al. 2017): ``mu = r2/r1`` per point, keep the smallest
  ``1 - discard_fraction`` of the sorted ratios, fit ``-log(1 - i/N) = d log mu`` through the origin
  (``i = 1..``; the same as ``skdim.id.TwoNN(discard_fraction=0.1)``);
* ``twonn_ml``: the maximum-likelihood TwoNN, ``(k-1) / (sum_{i<=k} log mu_(i) + (N-k) log mu_(k))``
  with the discarded ratios treated as censored (``(N-1)/sum log mu`` when nothing is discarded;
  the same as ``skdim.id.TwoNN(method="mle")``);
* ``mle``: Levina-Bickel with ``K = 5`` neighbours, per-point inverse estimates averaged
  (MacKay-Ghahramani), i.e. ``1 / mean_i[(1/(K-1)) sum_{j<K} log(T_K(x_i)/T_j(x_i))]``;
* ``pca90``: number of principal components that explain 90 % of the variance (global PCA);
* ``participation_ratio``: ``(sum lambda)^2 / sum lambda^2`` of the covariance eigenvalues.

Duplicate vectors (identical texts, or texts ending in the same token at ``h_0`` with last-token
pooling) have zero nearest-neighbour distance and make ``mu`` infinite: they are removed first, and
the number of distinct points that remain is stored with every estimate.

Rows (``metrics`` table), one per (pooling, estimator, decimation, subset, state):

* ``metric = intrinsic_dim`` (unit ``dim``) and ``metric = n_points`` (unit ``count``, the distinct
  points the estimate used), ``metric = n_duplicates`` (``count``, vectors removed as duplicates);
* ``grp = "<estimator>|<pooling>"``, e.g. ``twonn|mean``;
* ``variant = "1/k"``: the scale (decimation) -- the distinct points are split at random into ``k``
  disjoint subsets and each subset gets its own row (``prompt_id = subset-j``), so ``metrics_agg``
  gives the mean and interval over subsets. ``1/1`` is the estimate on every point; the TwoNN
  estimators are also run at ``1/2`` and ``1/4`` (DADApy's decimation scan: ID depends on scale).
* ``metric = id_ci_lo`` / ``id_ci_hi`` (``dim``), beside each ``1/1`` estimate: its 95 % interval
  from ``n_boot`` half-samples (:mod:`precompute.stats.id_resample`); ``id_std`` (``dim``) the
  standard error, ``n_resamples`` (``count``) the subsamples behind them. ``metrics_agg`` holds each
  as an ``n = 1`` row (its own interval over subsets is empty); the page draws these as the band.

An estimate that cannot be made (too few distinct points, constant representations) is skipped
with a logged reason; no row ever holds a NaN.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(size=(2000, 3)) @ np.linalg.qr(rng.normal(size=(10, 10)))[0][:3]
    >>> round(twonn(x))  # 2.93: a cube's faces pull TwoNN a little low
    3
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist

from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.model.pooled import PooledStates, pooled_states
from precompute.stats.id_resample import (
    RESAMPLED,
    RULE,
    halfsample_interval,
    halfsample_members,
    levina_bickel_fit,
    resampled_estimates,
    twonn_fit,
    twonn_ml_fit,
)
from precompute.types import BaseConfig, Item, RunContext, option

log = logging.getLogger(__name__)

ESTIMATORS = ("twonn", "twonn_ml", "mle", "pca90", "participation_ratio")
#: Estimators also run on random subsets (scale dependence).
DECIMATED = ("twonn", "twonn_ml")


@dataclass(frozen=True)
class IntrinsicDimensionConfig(BaseConfig):
    """Defaults and their sources (METHODS.md E1).

    ``discard_fraction`` = 0.1: SKDIM ``TwoNN`` and DADApy default (Valeriani et al. use 0.02).
    ``mle_k`` = 5: SKDIM ``MLE(K=5)``. ``pca_threshold`` = 0.9: E1 "global PCA at 90 %".
    ``decimations`` = "1,2,4": ours (a small DADApy-style decimation scan). ``n_items`` = 1000
    (issue 10's floor; E1 suggests 2,000-5,000 stimuli) and ``max_tokens`` = 128: ours.
    ``min_points`` = 10: ours -- an estimate on fewer distinct points is skipped (logged).
    ``interval`` = "halfsample", ``n_boot`` = 1000, ``boot_fraction`` = 0.5: the 95 % interval of
    every estimate on all points comes from ``n_boot`` random subsets of half the distinct points,
    drawn without replacement (delete-d jackknife, Shao & Wu 1989; the with-replacement bootstrap
    would put copies of a point at distance 0; :mod:`precompute.stats.id_resample`). B = 1000:
    Efron & Tibshirani (1993, ch. 19) ask for about 1,000 resamples for percentile intervals.
    ``boot_estimators``: all but PCA-90 (a full eigendecomposition per subsample; ours, cost).
    """

    RENAMED: ClassVar[dict[str, str]] = {"n_docs": "n_items"}

    n_items: int = 1000
    max_tokens: int = 128
    poolings: str = "mean,last"
    discard_fraction: float = 0.1
    mle_k: int = 5
    pca_threshold: float = 0.9
    decimations: str = "1,2,4"
    min_points: int = 10
    interval: str = option(RULE, choices=(RULE,))
    n_boot: int = option(1000, lo=0)
    boot_fraction: float = option(0.5, lo=0.05, hi=0.95)
    boot_estimators: str = ",".join(RESAMPLED)


# ------------------------------------------------------------------------------------------------
# Estimators: pure numpy, X is (N, D).


def unique_points(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop exact duplicate rows (zero distances make TwoNN's ``mu`` infinite).

    Returns:
        ``(distinct rows in first-seen order, number of rows removed)``.
    """
    x = _as_2d(x)
    _, first = np.unique(x, axis=0, return_index=True)
    keep = np.sort(first)
    return x[keep], len(x) - len(keep)


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"Expected points as an (N, D) array; got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("The points contain NaN or infinite values.")
    return x


def nn_distances(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Euclidean distances of each point to its ``k`` nearest other points, sorted ascending.

    Args:
        x: ``(N, D)`` points.
        k: Neighbours per point (``k < N``).
        chunk: Rows of the distance matrix held at once.

    Returns:
        ``(N, k)`` distances.
    """
    x = _as_2d(x)
    n = len(x)
    if k >= n:
        raise ValueError(f"{k} nearest neighbours need at least {k + 1} points; got {n}.")
    out = np.empty((n, k))
    for s in range(0, n, chunk):
        d = cdist(x[s : s + chunk], x)  # (c, N), exact differences (no Gram cancellation)
        d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf  # not its own neighbour
        part = np.partition(d, k - 1, axis=1)[:, :k]  # (c, k) unsorted
        out[s : s + chunk] = np.sort(part, axis=1)
    return out


def _mu(x: np.ndarray) -> np.ndarray:
    """TwoNN ratios ``r2/r1`` per point; duplicates are an error."""
    x = _as_2d(x)
    if len(x) < 3:
        raise ValueError(f"TwoNN needs at least 3 distinct points; got {len(x)}.")
    r = nn_distances(x, 2)  # (N, 2)
    if (r[:, 0] == 0).any():
        raise ValueError(
            f"{int((r[:, 0] == 0).sum())} points have a duplicate (zero distance to their nearest "
            "neighbour), so r2/r1 is infinite: remove duplicates first (unique_points)."
        )
    return r[:, 1] / r[:, 0]


def _n_keep(n: int, discard_fraction: float) -> int:
    if not 0.0 <= discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must be in [0, 1); got {discard_fraction}.")
    # F_i = i/N reaches 1 at i = N (log 0): keep at most N-1 ratios.
    k = min(int(n * (1.0 - discard_fraction)), n - 1)
    if k < 2:
        raise ValueError(
            f"Only {k} ratio(s) left after discarding {discard_fraction:.0%} of {n} points; "
            "TwoNN needs more distinct points."
        )
    return k


def twonn(x: np.ndarray, discard_fraction: float = 0.1) -> float:
    """TwoNN by the linear fit of Facco et al. (2017), as ``skdim.id.TwoNN`` computes it.

    Args:
        x: ``(N, D)`` distinct points.
        discard_fraction: Fraction of the largest ratios ``mu`` left out of the fit.

    Returns:
        The slope of ``-log(1 - i/N)`` against ``log mu_(i)``, ``i = 1..k``, through the origin.
    """
    mu = _mu(x)
    _n_keep(len(mu), discard_fraction)  # enough ratios left, a valid fraction
    val = float(twonn_fit(mu[None], discard_fraction)[0])
    if not np.isfinite(val):
        raise ValueError("All TwoNN ratios equal 1 (every point equidistant): no dimension.")
    return val


def twonn_ml(x: np.ndarray, discard_fraction: float = 0.1) -> float:
    """Maximum-likelihood TwoNN with the discarded ratios censored (``skdim`` ``method="mle"``)."""
    mu = _mu(x)
    if not 0.0 <= discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must be in [0, 1); got {discard_fraction}.")
    if int(len(mu) * (1.0 - discard_fraction)) < 2:
        raise ValueError("Fewer than 2 TwoNN ratios left; need at least 2 distinct points more.")
    val = float(twonn_ml_fit(mu[None], discard_fraction)[0])
    if not np.isfinite(val):
        raise ValueError("All TwoNN ratios equal 1 (every point equidistant): no dimension.")
    return val


def levina_bickel(x: np.ndarray, k: int = 5) -> float:
    """Levina-Bickel MLE with ``k`` neighbours, averaged as MacKay and Ghahramani suggest.

    Returns:
        ``1 / mean_i[(1/(k-1)) sum_{j<k} log(T_k(x_i) / T_j(x_i))]``.
    """
    x = _as_2d(x)
    if k < 2:
        raise ValueError(f"Levina-Bickel needs k >= 2 neighbours; got {k}.")
    t = nn_distances(x, k)  # (N, k)
    if (t[:, 0] == 0).any():
        raise ValueError("Duplicate points (zero neighbour distance): remove them (unique_points).")
    val = float(levina_bickel_fit(t[None])[0])
    if not np.isfinite(val):
        raise ValueError("All neighbour distances are equal: the MLE is undefined.")
    return val


def pca_spectrum(x: np.ndarray) -> np.ndarray:
    """Eigenvalues of the covariance of ``x`` (descending); constant data is an error."""
    x = _as_2d(x)
    if len(x) < 2:
        raise ValueError(f"PCA needs at least 2 points; got {len(x)}.")
    xc = x - x.mean(0)
    s = np.linalg.svd(xc, compute_uv=False)  # (min(N, D),)
    lam = s**2 / (len(x) - 1)
    if lam.sum() <= 1e-12 * max(float((x**2).sum()), 1e-300):
        raise ValueError("The representations are constant (zero variance): no PCA dimension.")
    return lam


def pca_dim(x: np.ndarray, threshold: float = 0.9) -> float:
    """Smallest number of principal components explaining ``threshold`` of the variance."""
    lam = pca_spectrum(x)
    frac = np.cumsum(lam) / lam.sum()
    return float(np.searchsorted(frac, threshold - 1e-12) + 1)


def participation_ratio(x: np.ndarray) -> float:
    """``(sum lambda)^2 / sum lambda^2`` of the covariance eigenvalues (between 1 and rank)."""
    lam = pca_spectrum(x)
    return float(lam.sum() ** 2 / (lam**2).sum())


def estimate(x: np.ndarray, estimator: str, cfg: IntrinsicDimensionConfig) -> float:
    """One estimator on distinct points ``x``, with the config's parameters."""
    if estimator == "twonn":
        return twonn(x, cfg.discard_fraction)
    if estimator == "twonn_ml":
        return twonn_ml(x, cfg.discard_fraction)
    if estimator == "mle":
        return levina_bickel(x, cfg.mle_k)
    if estimator == "pca90":
        return pca_dim(x, cfg.pca_threshold)
    if estimator == "participation_ratio":
        return participation_ratio(x)
    raise ValueError(f"Unknown estimator {estimator!r}; use one of {ESTIMATORS}.")


# ------------------------------------------------------------------------------------------------
# Rows


def _ints(spec: str) -> list[int]:
    try:
        vals = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"Expected comma-separated integers; got {spec!r}.") from err
    if not vals or min(vals) < 1:
        raise ValueError(f"Decimations must be integers >= 1; got {spec!r}.")
    return vals


def _resampled(pts: np.ndarray, cfg: IntrinsicDimensionConfig, seed: int, layer: int) -> dict:
    """Subsample estimates ``{estimator: (B,)}`` of one state's distinct points (may be empty)."""
    wanted = tuple(e.strip() for e in cfg.boot_estimators.split(",") if e.strip())
    m = int(len(pts) * cfg.boot_fraction)
    if not wanted or cfg.n_boot < 2 or m < cfg.min_points or m >= len(pts):
        return {}
    rng = np.random.default_rng([seed, layer, 1])  # own stream: decimations unchanged
    members = halfsample_members(len(pts), cfg.n_boot, cfg.boot_fraction, rng)
    return resampled_estimates(pts, wanted, members, cfg.discard_fraction, cfg.mle_k)


def interval_records(base: dict, val: float, reps: np.ndarray, n: int, m: int) -> list[dict]:
    """The ``id_ci_lo``/``id_ci_hi``/``id_std`` and ``n_resamples`` rows of one estimate."""
    try:
        lo, hi, se = halfsample_interval(val, reps, n, m)
    except ValueError as err:
        log.info("no interval for %s layer %d: %s", base["grp"], base["layer"], err)
        return []
    n_ok = float(np.isfinite(reps).sum())
    return [
        dict(base, metric="id_ci_lo", value=lo, unit="dim"),
        dict(base, metric="id_ci_hi", value=hi, unit="dim"),
        dict(base, metric="id_std", value=se, unit="dim"),
        dict(base, metric="n_resamples", value=n_ok, unit="count"),
    ]


def state_records(
    x: np.ndarray, cfg: IntrinsicDimensionConfig, layer: int, n_layers: int, pooling: str, seed: int
) -> list[dict]:
    """Rows for one residual state: every estimator, every decimation, with ``n_points``.

    Estimates on all points (``1/1``) also get their half-sampling interval rows
    (:func:`interval_records`). Estimates that fail (too few distinct points, constant data) are
    skipped with a log line.
    """
    pts, n_dup = unique_points(x)
    rng = np.random.default_rng([seed, layer])
    reps = _resampled(pts, cfg, seed, layer)
    recs: list[dict] = []
    for estimator in ESTIMATORS:
        decs = _ints(cfg.decimations) if estimator in DECIMATED else [1]
        for dec in decs:
            order = rng.permutation(len(pts)) if dec > 1 else np.arange(len(pts))
            for j, idx in enumerate(np.array_split(order, dec)):
                sub = pts[idx]
                where = f"{estimator}|{pooling} layer {layer} 1/{dec}"
                if len(sub) < cfg.min_points:
                    log.info("skip %s: %d distinct points < min_points", where, len(sub))
                    continue
                try:
                    val = estimate(sub, estimator, cfg)
                except ValueError as err:
                    log.info("skip %s: %s", where, err)
                    continue
                if not np.isfinite(val):
                    log.info("skip %s: non-finite estimate", where)
                    continue
                base = dict(
                    variant=f"1/{dec}",
                    prompt_id=f"subset-{j}",
                    layer=layer,
                    layer_kind="resid",
                    n_layers=n_layers,
                    grp=f"{estimator}|{pooling}",
                )
                recs.append(dict(base, metric="intrinsic_dim", value=val, unit="dim"))
                recs.append(dict(base, metric="n_points", value=float(len(sub)), unit="count"))
                recs.append(dict(base, metric="n_duplicates", value=float(n_dup), unit="count"))
                if dec == 1 and estimator in reps:
                    m = int(len(pts) * cfg.boot_fraction)
                    recs += interval_records(base, val, reps[estimator], len(pts), m)
    return recs


def id_frame(ps: PooledStates, cfg: IntrinsicDimensionConfig, ctx: RunContext) -> pd.DataFrame:
    """Build the ``metrics`` rows of every state and pooling from already pooled states."""
    n_layers = ps.n_states - 1
    recs: list[dict] = []
    for pooling in [p.strip() for p in cfg.poolings.split(",") if p.strip()]:
        arr = ps.pooled(pooling)  # (S, N, D)
        for layer in range(ps.n_states):
            recs += state_records(arr[layer], cfg, layer, n_layers, pooling, ctx.seed)
    return ctx.metrics(recs)


def process(
    lm: LoadedModel, items: list[Item], cfg: IntrinsicDimensionConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: one forward pass per stimulus, then every estimator on every state."""
    ps = pooled_states(lm, [it.text for it in items], cfg.max_tokens)
    return {"metrics": id_frame(ps, cfg, ctx)}


METHOD = Method(
    name="intrinsic_dimension",
    summary="Intrinsic dimension (TwoNN, ML TwoNN, Levina-Bickel, PCA) of each layer's vectors.",
    config_cls=IntrinsicDimensionConfig,
    dataset="wikitext",
    process=process,
    run_one=None,
    chunk_size=None,  # every stimulus at once: the estimate is over the whole set
)
