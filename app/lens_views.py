"""Data shaping for the lens pages: queries, the live lens frame, the cell inspector widget."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, data, glossary, live, notebooks, url_state
from app.charts.heat import position_labels

#: metric: (label, unit, what the curve means). What the data show is computed on the page
#: (``app.claims_views.lens_finding``), never written here.
METRICS = {
    "kl_to_final": (
        "KL(final ‖ lens)",
        "nats",
        "KL is 0 at the last layer by construction. Where it drops steeply is where the "
        "prediction is assembled; compare models at the same relative depth.",
    ),
    "ce_to_final": (
        "cross-entropy to final",
        "nats",
        "Cross-entropy = entropy of the final output + KL, so it ends at the model's own entropy.",
    ),
    "entropy": (
        "lens entropy",
        "nats",
        "Low entropy: the lens is confident (possibly of the input token). Lad et al. expect the "
        "last layers to sharpen the prediction: does the entropy fall at the end?",
    ),
    "top1_matches_final": (
        "top-1 agrees with final",
        "fraction",
        "The share of positions where the lens already picks the model's final token (1 at the "
        "last layer by construction).",
    ),
    "top1_is_input": (
        "lens repeats the input token",
        "fraction",
        "The share of positions where the lens's best guess is the input token itself: the "
        "residual stream still looks like the token embedding (a question the Evolution of LLM "
        "Stages project asks).",
    ),
    "ce_next_token": (
        "next-token loss through the lens",
        "nats",
        "The language-model loss if the model stopped at this layer.",
    ),
}

#: Heatmap colours: legend title and fixed domain (so prompts compare).
HEAT = {
    "top1_prob": ("probability of the top-1 token", (0.0, 1.0)),
    "kl_to_final": ("KL to the final output (nats)", (0.0, 10.0)),
    "entropy": ("entropy of the lens (nats)", (0.0, 10.0)),
}
HEAT_LABELS = {
    "top1_prob": "confidence (probability of the top-1 token)",
    "kl_to_final": "distance to the final output (KL, nats)",
    "entropy": "uncertainty (entropy, nats)",
}

DEFINITIONS = (
    "- **KL(final ‖ lens)**: how many nats of surprise the lens's distribution has about "
    "the model's real output; 0 at the last layer.\n"
    "- **Cross-entropy to final** = entropy of the final output + KL.\n"
    "- **Entropy** of the lens distribution (nats): low means confident.\n"
    "- **Top-1 agreement**: the lens's most likely token is the model's final choice.\n"
    "- **Repeats the input**: the lens's most likely token is the token at that position.\n"
    "- **Relative depth**: state i of L blocks sits at i / L (0 = embeddings)."
)

PROVENANCE = (
    "Each WikiText-2 paragraph is cut to its first `max_tokens` tokens (the run's config, "
    "below); per layer, metrics are averaged over positions 1..T-1 (position 0 excluded), then "
    "mean and 95 % interval (±1.96 SEM) over paragraphs. The final norm is recomputed on every "
    "layer's state (true logit lens)."
)


def example_prompts(model: str) -> dict[str, str]:
    """The team's example prompts of a model: ``prompt_id -> text``, in id order."""
    df = data.query(
        "SELECT prompt_id, text FROM prompts WHERE model = ? AND dataset = 'examples' "
        "ORDER BY prompt_id",
        [model],
    )
    return dict(zip(df["prompt_id"], df["text"]))


def curve_frame(metric: str, models: list[str], variant: str = "recompute_ln") -> pd.DataFrame:
    """Mean and 95 % interval of one lens metric per (model, layer) on WikiText-2."""
    df = data.query(
        """SELECT model, variant, rel_depth, layer, mean, ci_lo, ci_hi, n, unit
           FROM metrics_agg WHERE method = 'logit_lens' AND dataset = 'wikitext' AND metric = ?
           AND variant = ? ORDER BY model, layer""",
        [metric, variant],
    )
    return df[df["model"].isin(models)]


def topk_cell(model: str, prompt_id: str, layer: int, position: int) -> pd.DataFrame:
    """The lens's top-k tokens at one (layer, position) of an example prompt."""
    return data.query(
        """SELECT k AS rank, token_str AS token, prob FROM lens_topk
           WHERE model = ? AND method = 'logit_lens' AND prompt_id = ? AND layer = ?
           AND position = ? AND variant = 'recompute_ln' ORDER BY k""",
        [model, prompt_id, layer, position],
    )


def heatmap_frame(model: str, prompt_id: str, value: str) -> pd.DataFrame:
    """Layer x position cells of one example prompt: the coloured value and the top-1 token."""
    df = data.query(
        """SELECT t.layer, t.position, t.input_token, t.token_str AS token, t.prob AS top1_prob,
                  m.value AS val
           FROM lens_topk t
           LEFT JOIN metrics m ON m.model = t.model AND m.method = t.method
                AND m.prompt_id = t.prompt_id AND m.position = t.position AND m.layer = t.layer
                AND m.variant = t.variant AND m.metric = ?
           WHERE t.model = ? AND t.method = 'logit_lens' AND t.prompt_id = ? AND t.k = 1
                 AND t.variant = 'recompute_ln'
           ORDER BY t.layer, t.position""",
        [value, model, prompt_id],
    )
    df[value] = df["val"] if value != "top1_prob" else df["top1_prob"]
    return df.drop(columns=["val"])


def heatmap_chart(df: pd.DataFrame, value: str):
    """The example heatmap with a fixed colour scale per metric, so prompts compare."""
    title, domain = HEAT[value]
    return charts.token_heatmap(
        df,
        value,
        title,
        domain,
        reverse=value != "top1_prob",
        title="The lens's top-1 token at every layer and position",
    )


def heatmap_notebook(df: pd.DataFrame, value: str, name: str) -> None:
    """The example heatmap's "open in a notebook": cells labelled as the chart labels them."""
    title, domain = HEAT[value]
    labels, _ = position_labels(df)
    spec = notebooks.ChartSpec(
        title,
        "The lens's top-1 token at every layer and position",
        kind="heatmap",
        x="pos_label",
        y="layer",
        color=value,
        x_title="position: input token",
        axis_title="residual state (0 = embeddings)",
        x_sort="position",
        y_sort="descending",
        domain=domain,
        reverse=value != "top1_prob",
        text="top1_token",
    )
    rows = df.assign(pos_label=labels, top1_token=df["token"].map(charts.show_token))
    notebooks.button(rows, name, "logit_lens", spec, table="lens_topk", key="nb-heatmap")


def live_lens_frame(model_name: str, prompt: str, max_tokens: int) -> pd.DataFrame:
    """Run the same logit-lens function as precompute on the student's prompt."""
    from precompute.methods.logit_lens import LogitLensConfig, run_one

    lm = live.get_model(model_name)
    df = run_one(lm, prompt, LogitLensConfig(max_tokens=max_tokens))
    n_tokens = int(lm.tokenize(prompt).shape[1])
    wide = df.pivot_table(
        index=["layer", "position", "input_token", "token"], columns="metric", values="value"
    ).reset_index()
    wide["truncated"] = n_tokens > max_tokens
    wide.attrs["inputs"] = {"model": model_name, "prompt": prompt}  # for the CSV download
    return wide


def inspect_cell(df: pd.DataFrame, model: str, pid: str) -> None:
    """Pick a layer and a position: the lens's top-10 tokens there."""
    st.markdown("**Inspect one cell.** Pick a layer and a position to see the lens's top-10.")
    n_states = int(df["layer"].max())
    positions = df.drop_duplicates("position").sort_values("position")
    labels = dict(zip(positions["position"], positions["input_token"]))
    # The URL picks the cell: checked here (a layer beyond the depth clamped, an unknown position
    # reported) before the widgets read it; both widgets mirror themselves in the URL.
    url_state.seed_int("layer", 0, n_states, n_states // 2, "layer")
    url_state.seed_choice(
        "position", list(labels), max(labels), "position", cast=url_state.lead_int
    )
    c1, c2 = st.columns(2)
    layer = c1.slider("Layer (residual state)", 0, n_states, key="layer", bind="query-params")
    pos = c2.selectbox(
        "Position",
        list(labels),
        key="position",
        format_func=lambda p: f"{p}: {charts.show_token(labels[p])}",
        bind="query-params",
    )
    top = topk_cell(model, pid, layer, pos)
    top["token"] = top["token"].map(charts.show_token)
    st.dataframe(
        top,
        hide_index=True,
        width="content",
        column_config={
            "token": st.column_config.TextColumn("token", width="large"),
            "prob": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0),
        },
    )
    glossary.token_key()
