"""Data shaping for the lens pages (no charts here): queries and the live lens frame."""

from __future__ import annotations

import pandas as pd

from app import data, live

#: metric: (label, unit, what to notice)
METRICS = {
    "kl_to_final": (
        "KL(final ‖ lens)",
        "nats",
        "KL falls with depth and reaches 0 at the last layer by construction. Where it drops "
        "steeply is where the prediction is assembled; compare models at the same relative depth.",
    ),
    "ce_to_final": (
        "cross-entropy to final",
        "nats",
        "Cross-entropy = entropy of the final output + KL, so it ends at the model's own entropy.",
    ),
    "entropy": (
        "lens entropy",
        "nats",
        "Early layers read through the final norm are often spread out (high entropy) or stuck on "
        "the input token (low entropy); the last layers sharpen the prediction.",
    ),
    "top1_matches_final": (
        "top-1 agrees with final",
        "fraction",
        "The share of positions where the lens already picks the model's final token: it rises "
        "late, after most of the depth (the prediction-ensembling stage).",
    ),
    "top1_is_input": (
        "lens repeats the input token",
        "fraction",
        "In the first layers the lens's best guess is the input token itself (seed 000): the "
        "residual stream still looks like the token embedding. The rate falls quickly with depth.",
    ),
    "ce_next_token": (
        "next-token loss through the lens",
        "nats",
        "The language-model loss if the model stopped at this layer.",
    ),
}


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
    return wide
