"""Data shaping for the stage pages (early layers, sharpening, stage map).

Queries, the stage map (curves stacked, then segmented by ``precompute.stats.segmentation``),
the neuron scatter and the live attention-pattern frame. Pure numpy/pandas here; the live frame
imports torch-backed code lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from app import claims_views, data, live, notebooks
from app.notebooks import ChartSpec
from precompute.stats.segmentation import segment_models


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


NEURON_NOTE = (
    "Weights only (no data): each MLP neuron's output direction is compared (cosine) with every "
    "token's unembedding; over the vocabulary, kurtosis > 10 (non-excess, Gaussian = 3) with "
    "positive skew marks a prediction neuron (it promotes a few tokens), negative skew a "
    "suppression neuron. Weight preprocessing equivalent to TransformerLens `fold_ln`, "
    "`center_writing_weights`, `center_unembed` is applied to the matrices directly (final-norm "
    "scale folded into W_U; W_U centred over the vocabulary; LayerNorm models also centred over "
    "d_model). The bridge runs the checkpoint unfolded, so this is a re-derivation, not "
    "TransformerLens's own folding. For Gemma the post-MLP norm's scale is folded into each "
    "neuron's direction; that norm also makes the neuron's write non-linear, which no weight "
    "statistic captures."
)

ENTROPY_LESSON = (
    "**A lesson about instruments.** Both curves read each layer through the final norm and "
    "the unembedding. *recompute_ln* recomputes the norm's scale on each layer's own state: "
    "the true logit lens. *cached_final_scale* divides every layer by the **last** layer's "
    "scale, as TransformerLens did before 2.18 -- the version behind Lad et al.'s Fig. 8. "
    "Early residual states are much smaller than the last one, so the cached scale shrinks "
    "their logits and inflates their entropy. A striking 'entropy falls late' curve can be "
    "the instrument: always ask which normalisation a lens used."
)

ENTROPY_PROVENANCE = (
    "First 500 characters of each WikiText-2 paragraph; every residual state h_0..h_L read "
    "through the final norm (both variants) and the unembedding; entropy in bits with "
    "probabilities clamped at 1e-9, positions [1:-1], mean over positions, then mean and "
    "95 % interval over documents. x = i / L."
)

LOCALITY = {
    "prev5": "fraction of attention on the previous 5 tokens (ours, the paper's wording)",
    "prev5_mean": "mean weight on one of the previous 5 tokens (Lad et al.'s code)",
}

EARLY_METHOD = (
    "**Method.** For every layer we measure (1) how much attention goes to the five tokens "
    "just before each query, (2) how large the attention and MLP outputs are, and (3) how "
    "often the logit lens's best guess is the input token itself. Curves are plotted against "
    "relative depth so models of different depth line up."
)

EARLY_PROVENANCE = (
    "WikiText-2 paragraphs, first 128 tokens. Locality: per layer, LAD's mean of the "
    "sub-diagonals at offsets 1..5 of every head (mean weight), and our mass on offsets 1..5 "
    "averaged over heads and queries q ≥ 6 (fraction). Norms: L2 norm of what each sublayer "
    "adds to the residual stream (hooks `hook_attn_out`, `hook_mlp_out`), positions ≥ 1; "
    "ratio of means. Lens: recomputed final norm. Mean and 95 % interval over documents; "
    "the model's own weights (no TransformerLens folding)."
)


def models_with(*methods: str) -> list[str]:
    """Models with results for any of the methods, sorted by name."""
    return sorted(set().union(*(data.models_for(m) for m in methods)))


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


def signature_sizes(keys: list[str]) -> str:
    """How many documents stand behind each signature, per model (the stage map's n)."""
    parts = []
    for key in keys:
        text = claims_views.sample_size(curve(key), BY_KEY[key].label)
        if text:
            parts.append(text.removeprefix("n per point (").replace("):", ":", 1).rstrip("."))
    return ("n per point -- " + "; ".join(parts) + ".") if parts else ""


def stage_map(
    keys: list[str] | None = None, k: int = 4, min_size: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalised signatures and estimated boundaries for every model with any signature.

    The segmentation itself is ``precompute.stats.segmentation`` (an analysis, tested there).
    """
    keys = keys or STAGE_KEYS
    frames = [c.assign(key=key) for key in keys if not (c := curve(key)).empty]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return segment_models(df, keys, k, min_size, {s.key: s.label for s in SIGNATURES})


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


# ------------------------------------------------------------------------------ notebooks

#: The sharpening page's charts as notebooks: chart -> (method, table, what the page draws).
SHARPENING_NOTEBOOKS = {
    "neurons": (
        "neurons",
        "metrics_agg",
        ChartSpec("neurons of the layer (percent)", "Neurons, by depth", dash="signature"),
    ),
    "scatter": (
        "neurons",
        "neurons",
        ChartSpec(
            "kurtosis (non-excess; Gaussian = 3), log scale",
            "Every neuron of one layer (dashed: kurtosis 10)",
            kind="points",
            x="vocab_skew",
            y="vocab_kurt",
            color="class",
            x_title="skew of cosines over the vocabulary",
            color_title="neuron class",
            y_scale="log",
            rules=(("y", 10.0),),
            palette=(("prediction", "#0072B2"), ("suppression", "#D55E00"), ("other", "#BBBBBB")),
        ),
    ),
    "mlp_norm": (
        "component_norms",
        "metrics_agg",
        ChartSpec(
            "mean ‖MLP output‖ (positions ≥ 1), ÷ each model's maximum",
            "Size of the MLP's write, by depth",
            normalise=True,
        ),
    ),
    "entropy": (
        "lens_entropy",
        "metrics_agg",
        ChartSpec(
            "logit-lens entropy (bits)",
            "Logit-lens entropy, by depth",
            dash="variant",
            order=("recompute_ln", "cached_final_scale"),
        ),
    ),
}


def offer(df: pd.DataFrame, name: str, chart: str, key: str | None = None) -> None:
    """A sharpening chart's downloads: its rows as CSV and as a notebook drawing it."""
    method, table, spec = SHARPENING_NOTEBOOKS[chart]
    notebooks.downloads(df, name, method, spec, table, key)


def stage_notebook(mat: pd.DataFrame, bounds: pd.DataFrame, model: str) -> None:
    """The "open in a notebook" of one model's stage chart (boundaries as dashed rules)."""
    b = bounds[bounds["model"] == model] if not bounds.empty else bounds
    spec = ChartSpec(
        "normalised signature (0 = model's min, 1 = max)",
        f"Stage signatures of {model}",
        y="value",
        color="signature",
        band=False,
        stages=False,
        domain=(0.0, 1.0),
        rules=tuple(("x", float(v)) for v in b.get("rel_depth", [])),
    )
    methods = sorted({s.method for s in SIGNATURES})
    notebooks.button(mat[mat["model"] == model], f"stage_map_{model}", methods, spec)


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
    frame.attrs["inputs"] = {"model": model_name, "prompt": prompt}  # for the CSV download
    return {
        "frame": frame,
        "heads": pd.DataFrame(heads).rename(
            columns={
                "prev5_mass_fraction": "mass on previous 5",
                "prev5_mean_weight": "mean weight, offsets 1..5",
            }
        ),
        "truncated": n_tokens > max_tokens,
        "order": labels,
    }
