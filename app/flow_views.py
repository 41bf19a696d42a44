"""Data shaping for "When is the fact moved?" (attention knockout, activation patching).

Queries over ``metrics_agg`` and the live knockout frame; the charts are ``charts.knockout_chart``
and ``charts.patching_chart``.
"""

from __future__ import annotations

import re

import pandas as pd

from app import data, live

METHOD = "attention_knockout"
PATCH_METHOD = "activation_patching"
EDGES = {
    # grp: label (edges into the last position from ...)
    "subject": "subject → last",
    "non_subject": "non-subject → last",
    "last": "last → last",
}
#: Gandikota et al., "Evolution of LLM Stages" (seed 000, "Attn Knockout"): the drop sits at
#: 40-70 % of depth in every model size.
SEED_BAND = (0.4, 0.7)
SEED_BAND_LABEL = "Gandikota et al. report the drop here"
PATCH_VARIANTS = {
    "resid_last": "residual state at the last token (cumulative)",
    "block_out_last": "one block's output at the last token",
    "resid_subject_last": "residual state at the last subject token",
}
DATASETS = {"facts": "team facts", "known_1000": "known_1000 (ROME)"}


def datasets(method: str = METHOD) -> list[str]:
    """Datasets with results for a method, team facts first."""
    df = data.query("SELECT DISTINCT dataset FROM metrics_agg WHERE method = ?", [method])
    have = set(df["dataset"])
    return [d for d in DATASETS if d in have] + sorted(have - set(DATASETS))


def windows(dataset: str) -> list[str]:
    """Knockout windows present (``variant`` = ``W9`` ...), smallest first."""
    df = data.query(
        "SELECT DISTINCT variant FROM metrics WHERE method = ? AND dataset = ? "
        "AND metric = 'relative_diff_pct'",
        [METHOD, dataset],
    )
    return sorted(df["variant"], key=lambda v: int(re.sub(r"\D", "", v) or 0))


def knockout_curves(dataset: str, window: str, models: list[str] | None = None) -> pd.DataFrame:
    """Mean relative change of p(prediction) per edge set and window centre, 95 % interval."""
    # Aggregated here from the per-fact rows (mean, 95 % interval = 1.96 SEM), so results written
    # before the rows carried position = -1 (which metrics_agg needs) still show.
    df = data.query(
        """SELECT model, grp, layer, n_layers, rel_depth, avg(value) AS mean,
                  coalesce(stddev_samp(value) / sqrt(count(*)), 0) AS sem, count(*) AS n, unit
           FROM metrics WHERE method = ? AND dataset = ? AND variant = ?
           AND metric = 'relative_diff_pct' AND layer_kind = 'window_center'
           GROUP BY model, grp, layer, n_layers, rel_depth, unit
           ORDER BY model, grp, layer""",
        [METHOD, dataset, window],
    )
    df["ci_lo"] = df["mean"] - 1.96 * df["sem"]
    df["ci_hi"] = df["mean"] + 1.96 * df["sem"]
    if models:
        df = df[df["model"].isin(models)]
    df["edges"] = df["grp"].map(EDGES)
    return df.reset_index(drop=True)


def fact_counts(method: str, dataset: str) -> pd.DataFrame:
    """Per model: facts tried, answered correctly, and used (knocked out or patched)."""
    df = data.query(
        """SELECT model, metric, variant, n, mean FROM metrics_agg
           WHERE method = ? AND dataset = ? AND layer_kind = 'summary'
           AND metric IN ('answer_correct', 'pair_found', 'subject_found')""",
        [method, dataset],
    )
    rows = []
    for model, g in df.groupby("model"):
        g = g.drop_duplicates("metric").set_index("metric")
        tried = int(g.loc["answer_correct", "n"]) if "answer_correct" in g.index else 0
        acc = float(g.loc["answer_correct", "mean"]) if "answer_correct" in g.index else 0.0
        row = {"model": model, "facts tried": tried, "answered correctly": round(acc * tried)}
        if "pair_found" in g.index:
            row["with a swap partner"] = round(
                float(g.loc["pair_found", "mean"]) * int(g.loc["pair_found", "n"])
            )
        rows.append(row)
    return pd.DataFrame(rows)


def patching_curves(dataset: str, variant: str, models: list[str] | None = None) -> pd.DataFrame:
    """Mean normalised logit-difference effect per layer, 95 % interval over facts."""
    df = data.query(
        """SELECT model, layer, layer_kind, n_layers, rel_depth, mean, ci_lo, ci_hi, n, unit
           FROM metrics_agg WHERE method = ? AND dataset = ? AND variant = ?
           AND metric = 'effect_logit_diff' AND layer_kind <> 'summary'
           ORDER BY model, layer""",
        [PATCH_METHOD, dataset, variant],
    )
    if models:
        df = df[df["model"].isin(models)]
    return df.reset_index(drop=True)


def uses_table(dataset: str, variant: str) -> pd.DataFrame:
    """Per model: the mean "uses" layer and relative depth over facts (B3 step 6)."""
    df = data.query(
        """SELECT model, metric, mean, n FROM metrics_agg WHERE method = ? AND dataset = ?
           AND variant = ? AND metric IN ('uses_layer', 'uses_rel_depth')""",
        [PATCH_METHOD, dataset, variant],
    )
    if df.empty:
        return df
    wide = df.pivot_table(index="model", columns="metric", values="mean").reset_index()
    wide["facts"] = df.groupby("model")["n"].max().values
    return wide.rename(
        columns={"uses_layer": "uses: layer (mean)", "uses_rel_depth": "uses: relative depth"}
    ).round(3)


def word_span(prompt: str, picked: list[int]) -> tuple[int, int] | None:
    """Character span from the first to the last picked word (trailing punctuation dropped)."""
    from app.facts_views import prompt_words

    words = prompt_words(prompt)
    picked = sorted(i for i in picked if 0 <= i < len(words))
    if not picked:
        return None
    start, end = words[picked[0]][1], words[picked[-1]][2]
    while end > start and prompt[end - 1] in ",.;:!?\"'":
        end -= 1
    return (start, end) if end > start else None


def live_knockout(
    model_name: str, prompt: str, span: tuple[int, int], window: int, answer: str = ""
) -> pd.DataFrame:
    """Knock out the student's fact with the same function as precompute; long rows.

    Raises:
        ValueError: Bad subject or prompt (the message says what to change).
    """
    from precompute.methods.attention_knockout import knockout_fact, result_frame

    lm = live.get_model(model_name)
    r = knockout_fact(
        lm,
        prompt,
        window=window,
        char_span=span,
        answer=answer or None,
        max_tokens=live.config().max_live_tokens,
    )
    df = result_frame(r, lm.n_layers, model_name)
    df = df[df["metric"] == "relative_diff_pct"].rename(columns={"value": "mean"})
    df["ci_lo"] = df["ci_hi"] = df["mean"]
    df["n"] = 1
    df["edges"] = df["grp"].map(EDGES)
    df["prediction"] = r.target_str
    df["p_base"] = r.p_base
    df["subject"] = r.fact.subject
    df["subject_tokens"] = " | ".join(lm.token_strs(r.fact.ids[0, r.fact.start : r.fact.end]))
    df["correct"] = r.correct
    df["window"] = window
    return df.reset_index(drop=True)
