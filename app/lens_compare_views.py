"""Data shaping for the tuned-lens pages ("Guess, then refine", "Lens disagreement").

Queries of the ``guess_refine`` and ``tuned_lens`` rows and the live two-lens frame; the charts
are ``charts.stacked_shares``, ``charts.k_curves`` and ``charts.token_heatmap``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from app import data, live, notebooks
from app.notebooks import ChartSpec

GR = "guess_refine"
TL = "tuned_lens"
BUCKETS = ["top10", "top100", "top1000", "rest"]
BUCKET_LABELS = {
    "top10": "10 most frequent",
    "top100": "ranks 11-100",
    "top1000": "ranks 101-1000",
    "rest": "rarer",
}
LENS_LABELS = {"logit": "logit lens", "tuned": "tuned lens"}
FACT_GROUPS = {
    "single": "single-token answer",
    "t0": "1st token of a longer answer",
    "t1": "2nd token",
    "t2": "3rd token",
}


INTRO = (
    "The **logit lens** pushes each layer's residual stream straight through the final norm "
    "and the unembedding. The **tuned lens** first applies a small affine translator trained "
    "for that layer to match the model's final output. Untrained, the two are identical."
)
EVAL_NOTE = (
    "**What to look for.** The tuned lens is trained to match the final output, so on held-out "
    "text its KL should be lower than the logit lens's, most of all in early layers, where the "
    "logit lens reads the residual stream through an unembedding those layers never write for; "
    "both reach 0 at the last layer by construction. An undertrained tuned lens can be worse "
    "than no training: check the budget in each run's config (below)."
)
TUNED_PROVENANCE = (
    "Translators started from a per-layer ridge fit (ours) and fine-tuned with SGD-Nesterov "
    "(TL defaults) on WikiText-2 paragraphs against the model's own final distribution; "
    "evaluated on other paragraphs never used for training (positions 1..T-1). The stored "
    "lens (float16) is the one evaluated. "
    "`config_json` gives the budget: `cpu` (ours) or `paper` (TL: 250 × 2^18 tokens)."
)


def lens_meta_json(meta: dict, limit: int = 3000) -> str:
    """The tuned lens's metadata as JSON for the page (the long per-layer list left out)."""
    return json.dumps({k: v for k, v in meta.items() if k != "energy_kept_per_layer"}, indent=1)[
        :limit
    ]


INTRO_GR = (
    "For each prompt we read the residual stream at the last position, layer by layer, "
    "through two lenses: the **logit lens** (final norm + unembedding) and the **tuned lens** "
    "(a learned affine translator per layer first). Each predicted token is placed in a "
    "frequency bucket by its rank in WikiText-2, tokenised by the model's own tokenizer."
)
BUCKETS_NOTE = (
    "**What to look for.** Gupta et al. (with well-trained tuned lenses on 7B models) find the "
    "top token of early layers is most often one of the most frequent tokens (a statistical "
    "guess), refined with depth. Does your instrument agree? Our tuned lenses were trained on a "
    "CPU budget far from the paper's 65M tokens. The last column is the model itself."
)
EARLIEST_NOTE = (
    "**What to look for.** Lower curves mean the prediction enters the top k earlier. Gupta et "
    "al. find frequent predictions (often function words) getting there first, and for "
    "multi-token answers the first token needing the most depth. Their part-of-speech breakdown "
    "needs spaCy's English tagger, not installable from PyPI here, so the frequency of the "
    "predicted token stands in for it."
)
MCQ_NOTE = (
    "**What to look for.** Gupta et al. find the option letters A-D entering the top 10 (the "
    "*format*) well before the layer whose best option stays the model's final pick (the "
    "*decision*). Items are the team's own (`data/prompts/mcq.json`), shown after two solved "
    "examples. A decision only means something if the model answers above chance (25 %)."
)
GR_PROVENANCE = (
    "WikiText-2 test paragraphs cut at a seeded random word boundary (≥ 17 characters); "
    "frequency ranks counted on all paragraphs of the same file (the run's dataset sha256). "
    "Each row is one prompt; means and 95 % intervals over prompts. Facts: greedy answer must "
    "match the first answer token; later tokens teacher-forced and kept only when correct. "
    "The tuned lens is the one trained by `tuned_lens` (see the Lens disagreement page).",
)


def _agg(metric: str, dataset: str, models: list[str]) -> pd.DataFrame:
    df = data.query(
        """SELECT model, variant, layer, rel_depth, grp, mean, ci_lo, ci_hi, n
           FROM metrics_agg WHERE method = ? AND metric = ? AND dataset = ?
           ORDER BY model, variant, grp, layer""",
        [GR, metric, dataset],
    )
    df = df[df["model"].isin(models)].copy()
    df["lens"] = df["variant"].map(LENS_LABELS).fillna(df["variant"])
    return df


def bucket_shares(models: list[str]) -> pd.DataFrame:
    """Share of lens top-1 tokens in each frequency bucket, per model, lens and layer."""
    df = _agg("bucket_fraction", "wikitext", models)
    df["bucket"] = df["grp"].map(BUCKET_LABELS)
    df["order"] = df["grp"].map({b: i for i, b in enumerate(BUCKETS)})
    return df


def flip_rates(models: list[str]) -> pd.DataFrame:
    """Refined (flip) rate per bucket of the layer's top-1 token, and over all tokens."""
    df = _agg("flip_rate", "wikitext", models)
    df["bucket"] = df["grp"].map({**BUCKET_LABELS, "all": "all tokens"})
    return df


def earliest_curves(models: list[str], dataset: str, metric: str) -> pd.DataFrame:
    """Mean relative depth at which the prediction first (or for good) reaches rank <= k."""
    df = _agg(metric, dataset, models)
    if df.empty:
        return df.assign(group=[], k=[])
    parts = df["grp"].str.split("|k=", n=1, regex=False)
    df["group"] = parts.str[0]
    df["k"] = parts.str[1].astype(int)
    return df


def mcq_layers(models: list[str]) -> pd.DataFrame:
    """Per layer: options in the top-k (format) and the lens's pick = final pick (decision)."""
    frames = []
    for metric, label in (
        ("format_ok", "format: every option in the top 10"),
        ("decision_final", "decision: picks the final answer"),
    ):
        df = _agg(metric, "mcq", models)
        df["what"] = label
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def mcq_settled(models: list[str]) -> pd.DataFrame:
    """Mean relative depth at which the format and the decision settle (stay true to the end)."""
    rows = []
    for metric, label in (
        ("format_settled", "format settled"),
        ("decision_settled", "decision settled"),
        ("model_correct", "model's final answer correct (share)"),
    ):
        df = _agg(metric, "mcq", models)
        df["what"] = label
        rows.append(df)
    out = pd.concat(rows, ignore_index=True)
    return out[["model", "lens", "what", "mean", "ci_lo", "ci_hi", "n"]]


def _k_spec(color: str, title: str) -> ChartSpec:
    """Earliest depth reaching rank <= k, over k on a log axis, dashed by lens."""
    return ChartSpec(
        "relative depth where rank ≤ k first holds",
        title,
        x="k",
        x_title="k (rank threshold, log scale)",
        x_scale="log",
        color=color,
        dash="lens",
        domain=(0.0, 1.0),
        stages=False,
    )


#: The guess-then-refine page's charts as notebooks (what the page draws).
GR_NOTEBOOKS = {
    "buckets": ChartSpec(
        "share of lens top-1 tokens (fraction)",
        "How frequent is the lens's top-1 token, layer by layer?",
        kind="bars",
        x_title="relative depth (0 = embeddings, 1 = last)",
        x_bin=0.05,
        stack="normalize",
        color="bucket",
        color_title="corpus frequency of the top-1 token",
        order=tuple(BUCKET_LABELS[b] for b in BUCKETS),
        row="model",
        column="lens",
    ),
    "flips": ChartSpec(
        "refined rate: top-1 differs from the final token (fraction)",
        "Refined rate, by depth",
        color="bucket",
        dash="lens",
    ),
    "k_freq": _k_spec("frequency of the prediction", "By how frequent the prediction is"),
    "k_answer": _k_spec("answer token", "By answer token"),
    "mcq": ChartSpec(
        "share of items (fraction)", "Share of items, by depth", color="what", dash="lens"
    ),
}


def offer(
    df: pd.DataFrame, name: str, chart: str, key: str | None = None, csv: bool = True
) -> None:
    """A guess-then-refine chart's downloads: its rows (CSV, unless not ``csv``) and a notebook."""
    if csv:
        notebooks.downloads(df, name, GR, GR_NOTEBOOKS[chart], key=key)
    else:
        notebooks.button(df, name, GR, GR_NOTEBOOKS[chart], key=key)


def tuned_eval(models: list[str] | None, metric: str) -> pd.DataFrame:
    """Held-out curves of the tuned-lens evaluation, both lenses."""
    df = data.query(
        """SELECT model, variant, layer, rel_depth, mean, ci_lo, ci_hi, n FROM metrics_agg
           WHERE method = ? AND metric = ? ORDER BY model, variant, layer""",
        [TL, metric],
    )
    if models:
        df = df[df["model"].isin(models)]
    df["lens"] = df["variant"].map(LENS_LABELS).fillna(df["variant"])
    return df


# ----------------------------------------------------------------------------------------------
# Live.


def lens_dir() -> Path:
    """Where the loaded results keep their lenses (embedded folder or the fetched Hub copy)."""
    return Path(data.source().path) / "lenses"


def live_compare(model_name: str, prompt: str, max_tokens: int) -> dict:
    """Run both lenses on the student's prompt.

    Returns:
        ``{"frame": wide rows per (lens, layer, position) with ``disagree``, "lens": meta}``, or
        ``{"missing": message}`` when no tuned lens exists for the model.
    """
    from precompute.lenses.tuned import LensMismatchError, find_lens
    from precompute.methods.tuned_lens import compare_frame

    lm = live.get_model(model_name)
    try:
        lens = find_lens(lm, lens_dir())
    except LensMismatchError as err:
        return {"missing": str(err)}
    if lens is None:
        return {
            "missing": f"No tuned lens has been trained for **{model_name}** in these results, so "
            "only the logit lens can be shown (see the logit-lens page). An instructor trains one "
            f"with `python -m precompute run --model {model_name} --methods tuned_lens`."
        }
    df = compare_frame(lm, lens, prompt, max_tokens)
    n_tokens = int(lm.tokenize(prompt).shape[1])
    logit = df[df["lens"] == "logit"].set_index(["layer", "position"])
    tuned = df[df["lens"] == "tuned"].set_index(["layer", "position"])
    dis = (logit["token_id"] != tuned["token_id"]).rename("disagree")
    df = df.join(dis, on=["layer", "position"])
    df["truncated"] = n_tokens > max_tokens
    df.attrs["inputs"] = {"model": model_name, "prompt": prompt}  # for the CSV download
    return {"frame": df, "lens": lens.meta}


def disagreement_by_layer(df: pd.DataFrame) -> pd.DataFrame:
    """Share of positions where the two lenses' top-1 tokens differ, per layer."""
    one = df[df["lens"] == "logit"]
    out = one.groupby("layer", as_index=False)["disagree"].mean()
    n = int(one["n_layers"].iloc[0]) if len(one) else 1
    out["rel_depth"] = out["layer"] / n
    return out.rename(columns={"disagree": "share_disagree"})
