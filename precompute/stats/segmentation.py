"""Stage segmentation: where do a model's per-layer signatures change together?

Pure numpy/pandas (no torch): the app's stage map calls it on curves read from ``metrics_agg``,
and it can run on any table of per-layer curves. The boundaries are estimated from the data, not
drawn from the paper:

1. every signature (one per-layer curve of a model) is min-max normalised to [0, 1] within that
   model, so curves of different units can be stacked; a constant curve carries no information
   and is dropped;
2. the curves are interpolated onto the model's block grid ``rel_depth = l / (L-1)``,
   ``l = 0..L-1`` (residual-state curves at ``i / L`` linearly), giving an ``L x m`` matrix;
3. the layers are split into ``k`` contiguous segments (default 4, the number of stages Lad et
   al. propose) minimising the total squared deviation of every curve from its segment mean --
   least-squares piecewise-constant segmentation, solved exactly by dynamic programming in
   O(k L^2 m);
4. a boundary is drawn halfway between the last layer of one segment and the first of the next.

This tests the four-stage hypothesis instead of assuming it: if the segments fall at similar
relative depths in every model, the stages are shared.

Example::

    from precompute.stats.segmentation import segment
    segment(np.array([[0.0], [0.0], [1.0], [1.0]]), k=2)  # -> [2]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MATRIX_COLUMNS = ["model", "key", "signature", "layer", "rel_depth", "value"]
BOUNDARY_COLUMNS = ["model", "boundary", "layer", "rel_depth"]


def normalise(values: np.ndarray) -> np.ndarray | None:
    """Min-max to [0, 1]; ``None`` for a constant (or empty, or non-finite) curve."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or not np.isfinite(v).all():
        return None
    lo, hi = v.min(), v.max()
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return None
    return (v - lo) / (hi - lo)


def signature_matrix(
    df: pd.DataFrame, model: str, keys: list[str], labels: dict[str, str] | None = None
) -> pd.DataFrame:
    """One model's normalised signatures on its block grid, long.

    Args:
        df: Stacked curves with columns ``model, key, n_layers, rel_depth, mean``.
        model: Model name.
        keys: Signature keys to include (missing or constant ones are skipped).
        labels: Readable name per key (the key itself when absent).

    Returns:
        Rows ``model, key, signature, layer, rel_depth, value`` with ``value`` in [0, 1].
    """
    labels = labels or {}
    sub = df[df["model"] == model]
    if sub.empty:
        return pd.DataFrame(columns=MATRIX_COLUMNS)
    n_layers = int(sub["n_layers"].iloc[0])
    grid = np.arange(n_layers) / max(n_layers - 1, 1)  # (L,) block grid
    rows = []
    for key in keys:
        s = sub[sub["key"] == key].sort_values("rel_depth")
        if len(s) < 2:
            continue
        vals = np.interp(grid, s["rel_depth"].to_numpy(), s["mean"].to_numpy())  # (L,)
        norm = normalise(vals)
        if norm is None:
            continue
        label = labels.get(key, key)
        rows += [
            dict(model=model, key=key, signature=label, layer=i, rel_depth=float(x), value=float(y))
            for i, (x, y) in enumerate(zip(grid, norm))
        ]
    return pd.DataFrame(rows, columns=MATRIX_COLUMNS)


def segment(x: np.ndarray, k: int = 4, min_size: int = 1) -> list[int]:
    """Exact least-squares piecewise-constant segmentation of the rows of ``x``.

    Args:
        x: ``(n, m)`` -- ``n`` ordered points (layers), ``m`` curves.
        k: Number of segments.
        min_size: Fewest points per segment.

    Returns:
        The ``k - 1`` change points: indices where a new segment starts (increasing).

    Raises:
        ValueError: Too few points for ``k`` segments of ``min_size``.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    if k < 1 or n < k * min_size:
        raise ValueError(f"Cannot split {n} layers into {k} segments of at least {min_size}.")
    c1 = np.vstack([np.zeros(x.shape[1]), np.cumsum(x, 0)])  # (n+1, m) prefix sums
    c2 = np.concatenate([[0.0], np.cumsum((x**2).sum(1))])  # (n+1,)

    def cost(i: int, j: int) -> float:  # squared error of x[i:j] around its mean
        s = c1[j] - c1[i]
        return float(c2[j] - c2[i] - (s @ s) / (j - i))

    inf = float("inf")
    best = np.full((k + 1, n + 1), inf)
    arg = np.zeros((k + 1, n + 1), dtype=int)
    best[0, 0] = 0.0
    for seg in range(1, k + 1):
        for j in range(seg * min_size, n + 1):
            for i in range((seg - 1) * min_size, j - min_size + 1):
                if best[seg - 1, i] == inf:
                    continue
                c = best[seg - 1, i] + cost(i, j)
                if c < best[seg, j] - 1e-12:
                    best[seg, j], arg[seg, j] = c, i
    cuts, j = [], n
    for seg in range(k, 0, -1):
        j = int(arg[seg, j])
        cuts.append(j)
    return sorted(cuts)[1:]  # drop the leading 0


def stage_boundaries(mat: pd.DataFrame, k: int = 4, min_size: int = 1) -> pd.DataFrame:
    """Estimated stage boundaries of one model from its ``signature_matrix``.

    Returns:
        Rows ``model, boundary (1..k-1), layer`` (first layer of the new segment) and
        ``rel_depth`` (halfway between the two layers); empty when there is too little data.
    """
    if mat.empty:
        return pd.DataFrame(columns=BOUNDARY_COLUMNS)
    wide = mat.pivot_table(index="layer", columns="key", values="value").sort_index()  # (L, m)
    n = len(wide)
    if n < k * min_size:
        return pd.DataFrame(columns=BOUNDARY_COLUMNS)
    cuts = segment(wide.to_numpy(), k, min_size)
    model = mat["model"].iloc[0]
    step = 1.0 / max(n - 1, 1)
    return pd.DataFrame(
        [
            dict(model=model, boundary=b, layer=c, rel_depth=(c - 0.5) * step)
            for b, c in enumerate(cuts, start=1)
        ],
        columns=BOUNDARY_COLUMNS,
    )


def segment_models(
    df: pd.DataFrame,
    keys: list[str],
    k: int = 4,
    min_size: int = 1,
    labels: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalised signatures and estimated boundaries of every model in stacked curves.

    Args:
        df: Stacked curves with columns ``model, key, n_layers, rel_depth, mean``.
        keys: Signature keys to use.
        k: Number of stages.
        min_size: Fewest layers per stage.
        labels: Readable name per key.

    Returns:
        ``(matrix, boundaries)``: rows as in ``signature_matrix`` and ``stage_boundaries``.
    """
    if df.empty:
        return pd.DataFrame(columns=MATRIX_COLUMNS), pd.DataFrame(columns=BOUNDARY_COLUMNS)
    mats = [signature_matrix(df, m, keys, labels) for m in sorted(df["model"].unique())]
    mats = [m for m in mats if not m.empty]
    if not mats:
        return pd.DataFrame(columns=MATRIX_COLUMNS), pd.DataFrame(columns=BOUNDARY_COLUMNS)
    mat = pd.concat(mats, ignore_index=True)
    bounds = [stage_boundaries(mat[mat["model"] == m], k, min_size) for m in mat["model"].unique()]
    bounds = [b for b in bounds if not b.empty]
    out = pd.concat(bounds, ignore_index=True) if bounds else pd.DataFrame(columns=BOUNDARY_COLUMNS)
    return mat, out
