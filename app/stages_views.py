"""Data shaping for the stage pages (early layers, sharpening, stage map).

Queries, the stage segmentation, and the live attention-pattern frame. The boundaries of the
stage map are estimated from the data, not drawn from the paper:

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
"""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd

from app import data, live


@dataclass(frozen=True)
class Signature:
    """A per-layer curve read from ``metrics_agg``."""

    key: str
    label: str
    method: str
    metric: str
    variant: str | None
    unit: str
    dataset: str | None = "wikitext"


SIGNATURES = [
    Signature(
        "prev5",
        "attention on previous 5 tokens",
        "attention_locality",
        "prev5_mass_fraction",
        "mass_fraction",
        "fraction",
    ),
    Signature(
        "prev5_mean",
        "mean weight on one of the previous 5",
        "attention_locality",
        "prev5_mean_weight",
        "mean_weight",
        "prob",
    ),
    Signature(
        "attn_mlp",
        "attention / MLP output norm",
        "component_norms",
        "attn_mlp_ratio",
        "ratio_of_means",
        "ratio",
    ),
    Signature("mlp_norm", "MLP output norm", "component_norms", "mlp_out_norm", "", "norm"),
    Signature("attn_norm", "attention output norm", "component_norms", "attn_out_norm", "", "norm"),
    Signature(
        "repeat_input",
        "lens repeats the input token",
        "logit_lens",
        "top1_is_input",
        "recompute_ln",
        "fraction",
    ),
    Signature(
        "lens_kl",
        "lens KL to the final output",
        "logit_lens",
        "kl_to_final",
        "recompute_ln",
        "nats",
    ),
    Signature(
        "entropy",
        "lens entropy (recomputed norm)",
        "lens_entropy",
        "entropy_bits",
        "recompute_ln",
        "bits",
    ),
    Signature(
        "entropy_cached",
        "lens entropy (cached final scale)",
        "lens_entropy",
        "entropy_bits",
        "cached_final_scale",
        "bits",
    ),
    Signature(
        "pct_pred", "prediction neurons", "neurons", "pct_prediction", "lad", "percent", None
    ),
    Signature(
        "pct_supp", "suppression neurons", "neurons", "pct_suppression", "lad", "percent", None
    ),
    Signature("delete_kl", "KL when the layer is deleted", "layer_ablation", "kl", "block", "nats"),
]
BY_KEY = {s.key: s for s in SIGNATURES}

#: The signatures stacked on the stage map (one per phenomenon; no near-duplicates).
STAGE_KEYS = [
    "prev5",
    "attn_mlp",
    "mlp_norm",
    "repeat_input",
    "lens_kl",
    "entropy",
    "pct_pred",
    "pct_supp",
    "delete_kl",
]


def curve(key: str) -> pd.DataFrame:
    """Mean curve over documents of one signature for every model (empty when not computed)."""
    sig = BY_KEY[key]
    sql = """SELECT model, layer, layer_kind, n_layers, rel_depth, mean, ci_lo, ci_hi, n, unit,
                    variant
             FROM metrics_agg WHERE method = ? AND metric = ?"""
    params: list = [sig.method, sig.metric]
    if sig.variant is not None:
        sql += " AND variant = ?"
        params.append(sig.variant)
    if sig.dataset is not None:
        sql += " AND dataset = ?"
        params.append(sig.dataset)
    df = data.query(sql + " ORDER BY model, layer", params)
    df["signature"] = sig.label
    return df


def curves(keys: list[str]) -> pd.DataFrame:
    """Several signatures stacked (a ``signature`` column tells them apart)."""
    frames = [curve(k) for k in keys]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------------------------------------ stage map


def normalise(values: np.ndarray) -> np.ndarray | None:
    """Min-max to [0, 1]; ``None`` for a constant (or empty) curve."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or not np.isfinite(v).all():
        return None
    lo, hi = v.min(), v.max()
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return None
    return (v - lo) / (hi - lo)


def signature_matrix(df: pd.DataFrame, model: str, keys: list[str]) -> pd.DataFrame:
    """One model's normalised signatures on its block grid, long.

    Args:
        df: Stacked curves (``curves``) with a ``key`` column.
        model: Model name.
        keys: Signature keys to include (missing ones are skipped).

    Returns:
        Rows ``model, key, signature, layer, rel_depth, value`` with ``value`` in [0, 1].
    """
    sub = df[df["model"] == model]
    if sub.empty:
        return pd.DataFrame(columns=["model", "key", "signature", "layer", "rel_depth", "value"])
    n_layers = int(sub["n_layers"].iloc[0])
    grid = np.arange(n_layers) / max(n_layers - 1, 1)  # block grid
    rows = []
    for key in keys:
        s = sub[sub["key"] == key].sort_values("rel_depth")
        if len(s) < 2:
            continue
        vals = np.interp(grid, s["rel_depth"].to_numpy(), s["mean"].to_numpy())
        norm = normalise(vals)
        if norm is None:
            continue
        for layer, (x, y) in enumerate(zip(grid, norm)):
            rows.append(
                dict(
                    model=model,
                    key=key,
                    signature=BY_KEY[key].label,
                    layer=layer,
                    rel_depth=float(x),
                    value=float(y),
                )
            )
    return pd.DataFrame(rows, columns=["model", "key", "signature", "layer", "rel_depth", "value"])


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
    cols = ["model", "boundary", "layer", "rel_depth"]
    if mat.empty:
        return pd.DataFrame(columns=cols)
    wide = mat.pivot_table(index="layer", columns="key", values="value").sort_index()
    n = len(wide)
    if n < k * min_size:
        return pd.DataFrame(columns=cols)
    cuts = segment(wide.to_numpy(), k, min_size)
    model = mat["model"].iloc[0]
    step = 1.0 / max(n - 1, 1)
    return pd.DataFrame(
        [
            dict(model=model, boundary=b, layer=c, rel_depth=(c - 0.5) * step)
            for b, c in enumerate(cuts, start=1)
        ],
        columns=cols,
    )


def stage_map(
    keys: list[str] | None = None, k: int = 4, min_size: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalised signatures and estimated boundaries for every model with any signature."""
    keys = keys or STAGE_KEYS
    frames = []
    for key in keys:
        c = curve(key)
        if not c.empty:
            frames.append(c.assign(key=key))
    if not frames:
        return pd.DataFrame(), pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    mats = [signature_matrix(df, m, keys) for m in sorted(df["model"].unique())]
    mat = pd.concat([m for m in mats if not m.empty], ignore_index=True) if mats else df.iloc[:0]
    bounds = [stage_boundaries(mat[mat["model"] == m], k, min_size) for m in mat["model"].unique()]
    bounds = [b for b in bounds if not b.empty]
    return mat, (pd.concat(bounds, ignore_index=True) if bounds else pd.DataFrame())


def stage_chart(mat: pd.DataFrame, bounds: pd.DataFrame, model: str) -> alt.LayerChart:
    """One model's normalised signatures over relative depth with the estimated boundaries."""
    m = mat[mat["model"] == model]
    lines = (
        alt.Chart(m)
        .mark_line(point=alt.OverlayMarkDef(size=14))
        .encode(
            x=alt.X(
                "rel_depth:Q",
                title="relative depth (0 = first, 1 = last)",
                scale=alt.Scale(domain=[0, 1]),
            ),
            y=alt.Y("value:Q", title="normalised signature (0 = model's min, 1 = max)"),
            color=alt.Color("signature:N", title="signature"),
            tooltip=["signature:N", "layer:O", alt.Tooltip("value:Q", format=".2f")],
        )
    )
    layers = [lines]
    b = bounds[bounds["model"] == model] if not bounds.empty else bounds
    if not b.empty:
        layers.append(
            alt.Chart(b)
            .mark_rule(strokeDash=[6, 3], size=2, color="black")
            .encode(
                x="rel_depth:Q",
                tooltip=["boundary:O", "layer:O", alt.Tooltip("rel_depth:Q", format=".2f")],
            )
        )
    return alt.layer(*layers).properties(title=model, height=320)


# ------------------------------------------------------------------------------ neurons


def neuron_scatter_frame(model: str, layer: int, limit: int = 5000) -> pd.DataFrame:
    """Per-neuron moments of one layer (for the skew/kurtosis scatter); empty without the table."""
    if not data.table_exists("neurons"):
        return pd.DataFrame()
    df = data.query(
        """SELECT neuron, vocab_skew, vocab_kurt, is_prediction, is_suppression
           FROM neurons WHERE model = ? AND layer = ? ORDER BY neuron LIMIT ?""",
        [model, layer, limit],
    )
    df["class"] = np.where(
        df["is_prediction"], "prediction", np.where(df["is_suppression"], "suppression", "other")
    )
    return df


def neuron_scatter(df: pd.DataFrame, threshold: float = 10.0) -> alt.LayerChart:
    """Skew against (non-excess) kurtosis, log scale, with the threshold line."""
    pts = (
        alt.Chart(df)
        .mark_circle(size=14, opacity=0.6)
        .encode(
            x=alt.X("vocab_skew:Q", title="skew of cosines over the vocabulary"),
            y=alt.Y(
                "vocab_kurt:Q",
                title="kurtosis (non-excess; Gaussian = 3), log",
                scale=alt.Scale(type="log"),
            ),
            color=alt.Color(
                "class:N",
                scale=alt.Scale(
                    domain=["prediction", "suppression", "other"],
                    range=["#0072B2", "#D55E00", "#BBBBBB"],
                ),
            ),
            tooltip=[
                "neuron:Q",
                alt.Tooltip("vocab_skew:Q", format=".2f"),
                alt.Tooltip("vocab_kurt:Q", format=".1f"),
                "class:N",
            ],
        )
    )
    rule = alt.Chart(pd.DataFrame({"y": [threshold]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    return alt.layer(pts, rule).properties(height=320)


# ------------------------------------------------------------------------------ live


def live_pattern_frame(
    model_name: str, prompt: str, layer: int, max_tokens: int, top_k: int = 5
) -> dict:
    """Return the attention pattern of one layer for the student's prompt, every head, long.

    Returns:
        ``{"frame": rows (head, query, key, weight, tokens, in_band), "heads": per-head stats,
        "truncated": bool}``.

    Raises:
        ValueError: Layer out of range, or a prompt too short for the statistics.
    """
    from precompute.methods.attention_locality import (
        attention_pattern,
        locality_stats,
        min_tokens,
    )

    lm = live.get_model(model_name)
    n_tokens = int(lm.tokenize(prompt).shape[1])
    ids = lm.tokenize(prompt, max_tokens=max_tokens)
    if ids.shape[1] < 2:
        raise ValueError("The prompt has one token: attention needs at least two. Type more.")
    pat = attention_pattern(lm, ids, layer)  # (H, T, T)
    toks = lm.token_strs(ids)
    labels = [f"{i}: {t}" for i, t in enumerate(toks)]
    h, t, _ = pat.shape
    hh, qq, kk = np.meshgrid(np.arange(h), np.arange(t), np.arange(t), indexing="ij")
    frame = pd.DataFrame(
        {
            "head": hh.ravel(),
            "query": qq.ravel(),
            "key": kk.ravel(),
            "weight": pat.numpy().ravel(),
        }
    )
    frame = frame[frame["key"] <= frame["query"]].reset_index(drop=True)
    frame["query_token"] = [labels[i] for i in frame["query"]]
    frame["key_token"] = [labels[i] for i in frame["key"]]
    frame["in_band"] = (frame["query"] - frame["key"]).between(1, top_k)
    heads = []
    for head in range(h):
        s = locality_stats(pat[head : head + 1], top_k) if t >= min_tokens(top_k) else {}
        heads.append(dict(head=head, **s))
    return {
        "frame": frame,
        "heads": pd.DataFrame(heads),
        "truncated": n_tokens > max_tokens,
        "order": labels,
    }


def pattern_chart(frame: pd.DataFrame, order: list[str]) -> alt.LayerChart:
    """Query x key heatmap of one head, the previous-five band outlined."""
    base = alt.Chart(frame).encode(
        x=alt.X("key_token:N", sort=order, title="key (attended-to) position: token"),
        y=alt.Y("query_token:N", sort=order, title="query position: token"),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(
            "weight:Q", scale=alt.Scale(scheme="viridis", domain=[0, 1]), title="attention weight"
        ),
        tooltip=["query_token:N", "key_token:N", alt.Tooltip("weight:Q", format=".3f")],
    )
    band = base.transform_filter("datum.in_band").mark_rect(
        fill=None, stroke="#D55E00", strokeWidth=1.5
    )
    size = max(22 * len(order), 260)
    return alt.layer(rect, band).properties(width=min(size, 900), height=min(size, 900))
