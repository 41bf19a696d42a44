"""Data shaping for "When is the fact moved?" (attention knockout, activation patching).

Queries over ``metrics_agg`` and the live knockout frame; the charts are ``charts.knockout_chart``
and ``charts.patching_chart``.
"""

from __future__ import annotations

import re

import pandas as pd

from app import data, live, notebooks

METHOD = "attention_knockout"
PATCH_METHOD = "activation_patching"
EDGES = {
    # grp: label (edges into the last position from ...)
    "subject": "subject → last",
    "non_subject": "non-subject → last",
    "last": "last → last",
    "first": "start token (position 0, the attention sink) → last",
}
#: Gandikota et al., "Evolution of LLM Stages" (its "Attn Knockout" section): the drop sits at
#: 40-70 % of depth in every model size.
SEED_BAND = (0.4, 0.7)
SEED_BAND_LABEL = "Gandikota et al. report the drop here"
PATCH_VARIANTS = {
    "resid_last": "residual state at the last token (cumulative)",
    "block_out_last": "one block's output at the last token",
    "resid_subject_last": "residual state at the last subject token",
}
DATASETS = {
    "facts": "team facts",
    "known_1000": "known_1000 (ROME)",
    "facts_known": "team facts + known_1000",
}

METHOD_NOTE = (
    "**Method.** Attention is the only way information moves between tokens. Block the "
    "attention edges into the last token — from the subject, from the other words, or from "
    "itself — in a window of layers, and measure how much the probability of the model's "
    "answer changes. Sliding the window through the depth shows *when* each edge set "
    "carries what the answer needs. Activation patching asks the complementary question: "
    "from which layer on does the last token's state already hold the answer?"
)
KNOCKOUT_NOTE = (
    "**What to look for.** Geva et al. find that cutting the edges from the *subject* to the "
    "last token hurts only in a band of middle-upper layers: that is when the subject's "
    "information is moved to where the answer is predicted. The grey band is where Gandikota et "
    "al. (Evolution of LLM Stages) report the drop, 40–70 % of depth. Cutting the *non-subject* "
    "tokens (the relation words) hurts earlier in Geva et al.'s models."
)
KNOCKOUT_PROVENANCE = (
    "Per fact: the model's own top token o at the last position and its probability p_base. "
    "For each centre layer, every head of the W layers around it gets a pre-softmax score of "
    "−∞ on the cut edges (into the last token only), so the other keys are renormalised; "
    "relative change = 100·(p_new − p_base)/p_base. Mean and 95 % interval over the facts the "
    "model answers correctly. Window and facts as recorded in the run's config."
)
PATCH_NOTE = (
    "**What to look for.** Copying the clean last-token state into the run with the swapped "
    "subject restores the answer only from some depth on: before it, the last token does not "
    "yet hold the fact. The layer where the effect first passes 0.5 (dashed line) is where the "
    "model has *used* the fact: does it sit after the knockout band above? (Table below.)"
)
PATCH_PROVENANCE = (
    "Pairs: the clean fact prompt and the same prompt with another subject of the same relation "
    "that has the same tokens outside the subject (our protocol, METHODS.md B3). Metric: "
    "logit(o) − logit(o′), o and o′ the two runs' answers; effect = (patched − corrupted)/(clean "
    "− corrupted). Mean and 95 % interval over pairs."
)


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


def live_knockout(
    model_name: str, prompt: str, span: tuple[int, int] | None, window: int, answer: str = ""
) -> pd.DataFrame:
    """Knock out the student's fact with the same function as precompute; long rows.

    Raises:
        ValueError: Bad subject or prompt (the message says what to change).
    """
    from precompute.methods.attention_knockout import knockout_fact, result_frame

    prompt = live.check_prompt(prompt, max_chars=200)
    if span is None:
        raise ValueError("Pick the subject's words first.")
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
    df = df.reset_index(drop=True)
    df.attrs["inputs"] = {"model": model_name, "prompt": prompt}  # for the CSV download
    return df


def describe_live(df: pd.DataFrame, answer: str) -> str:
    """What the live knockout ran on, and a note when it is not the expected answer."""
    first = df.iloc[0]
    text = (
        f"{first['model']} predicts **{first['prediction']!r}** (p = {first['p_base']:.3f}); "
        f"subject tokens: {first['subject_tokens']}; window {first['window']} layers."
    )
    if answer.strip() and not bool(first["correct"]):
        text += (
            "\n\nThe model does not answer with your expected word: the curves follow its own "
            "prediction, so they show how *that* answer is assembled."
        )
    return text


def _depth_spec(y_title: str, title: str, rule: float, x_title: str | None = None):
    """A knockout or patching chart as a notebook draws it: the reported band, a reference rule."""
    return notebooks.ChartSpec(
        y_title,
        title,
        x_title=x_title,
        stages=False,
        x_bands=((*SEED_BAND, SEED_BAND_LABEL),),
        rules=(("y", rule),),
    )


def knockout_notebook(df: pd.DataFrame, grp: str, window: str) -> None:
    """The "open in a notebook" of one edge set's knockout chart."""
    spec = _depth_spec(
        "change in p(prediction) (%)",
        f"Cutting the edges {EDGES.get(grp, grp)}",
        0.0,
        "relative depth of the window centre (0 = first block, 1 = last)",
    )
    notebooks.button(df, f"knockout_{window}_{grp}", METHOD, spec, table="metrics")


def patching_notebook(df: pd.DataFrame, dataset: str, variant: str) -> None:
    """The "open in a notebook" of the activation-patching chart."""
    spec = _depth_spec(
        "normalised logit-difference effect (0 = corrupted, 1 = clean)",
        "Patching the clean state back in",
        0.5,
    )
    notebooks.button(df, f"activation_patching_{dataset}_{variant}", PATCH_METHOD, spec)
