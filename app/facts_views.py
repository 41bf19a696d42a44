"""Data shaping for "Where are facts stored?" (causal tracing): queries, live frames, heatmaps.

The heatmap builder is a pure function (DataFrame in, Altair chart out) kept here because its
axes differ from ``charts.token_heatmap``: layers are blocks (not residual states) and the subject
tokens are marked.
"""

from __future__ import annotations

import json
import re

import altair as alt
import pandas as pd

from app import data, live

METHOD = "causal_tracing"
KINDS = {
    # kind: (label, colour scheme as in ROME's figures)
    "hidden": ("single hidden state (block output)", "purples"),
    "mlp": ("MLP outputs, window of 10 layers", "greens"),
    "attn": ("attention outputs, window of 10 layers", "reds"),
}
GROUPS = {
    "first_subject": "first subject token",
    "middle_subject": "middle subject tokens",
    "last_subject": "last subject token",
    "first_subsequent": "first subsequent token",
    "further": "further tokens",
    "last": "last token",
}
DATASETS = {"facts": "team facts", "known_1000": "known_1000 (ROME)"}


def datasets() -> list[str]:
    """Datasets with causal-tracing results, team facts first."""
    df = data.query("SELECT DISTINCT dataset FROM metrics_agg WHERE method = ?", [METHOD])
    have = set(df["dataset"])
    return [d for d in DATASETS if d in have] + sorted(have - set(DATASETS))


def group_curves(kind: str, dataset: str, groups: list[str]) -> pd.DataFrame:
    """Average indirect effect per token group and layer, with its 95 % interval over facts."""
    df = data.query(
        """SELECT model, grp, layer, rel_depth, n_layers, mean, ci_lo, ci_hi, n, unit
           FROM metrics_agg WHERE method = ? AND metric = 'indirect_effect' AND variant = ?
           AND dataset = ? AND layer_kind = 'block' ORDER BY model, grp, layer""",
        [METHOD, kind, dataset],
    )
    df = df[df["grp"].isin(groups)].copy()
    df["token group"] = df["grp"].map(GROUPS)
    return df


def fact_summary(dataset: str) -> pd.DataFrame:
    """Per model: facts tried, answered correctly (and so traced), mean p_clean and p_corrupt."""
    return data.query(
        """SELECT model,
                  count(*) FILTER (WHERE metric = 'p_clean') AS facts,
                  sum(value) FILTER (WHERE metric = 'correct') AS correct,
                  avg(value) FILTER (WHERE metric = 'p_clean') AS mean_p_clean,
                  avg(value) FILTER (WHERE metric = 'p_corrupt') AS mean_p_corrupt
           FROM metrics WHERE method = ? AND dataset = ? AND layer_kind = 'fact'
           GROUP BY model ORDER BY model""",
        [METHOD, dataset],
    )


def traced_facts(model: str, dataset: str) -> pd.DataFrame:
    """List the facts of one model that were traced (answered correctly), with prompt and answer."""
    if not data.table_exists("fact_checks"):
        return pd.DataFrame(columns=["prompt_id", "label"])
    df = data.query(
        """SELECT f.prompt_id, p.text, f.subject, f.prediction
           FROM fact_checks f JOIN prompts p USING (model, dataset, prompt_id)
           WHERE f.model = ? AND f.dataset = ? AND f.method = ? AND f.correct
           ORDER BY f.prompt_id""",
        [model, dataset, METHOD],
    ).drop_duplicates("prompt_id")
    df["label"] = df["text"] + " →" + df["prediction"]
    return df


def fact_cells(model: str, dataset: str, prompt_id: str) -> tuple[pd.DataFrame, dict]:
    """Token x layer cells of one fact (all kinds) and its scalars (p_clean, p_corrupt, ...)."""
    cells = data.query(
        """SELECT variant AS kind, position, layer, rel_depth, grp, value AS p_restored
           FROM metrics WHERE method = ? AND model = ? AND dataset = ? AND prompt_id = ?
           AND metric = 'p_restored' AND position >= 0 ORDER BY kind, position, layer""",
        [METHOD, model, dataset, prompt_id],
    )
    scal = data.query(
        """SELECT metric, value FROM metrics WHERE method = ? AND model = ? AND dataset = ?
           AND prompt_id = ? AND layer_kind = 'fact'""",
        [METHOD, model, dataset, prompt_id],
    )
    info = dict(zip(scal["metric"], scal["value"]))
    toks = data.query(
        "SELECT tokens_json FROM prompts WHERE model = ? AND dataset = ? AND prompt_id = ? LIMIT 1",
        [model, dataset, prompt_id],
    )
    tokens = json.loads(toks["tokens_json"].iloc[0]) if len(toks) else []
    b, e = int(info.get("subject_start", -1)), int(info.get("subject_end", -1))
    cells["input_token"] = [tokens[p] if p < len(tokens) else "?" for p in cells["position"]]
    cells["subject"] = cells["position"].between(b, e - 1)
    cells["p_clean"] = info.get("p_clean")
    cells["p_corrupt"] = info.get("p_corrupt")
    return cells, info


def trace_heatmap(df: pd.DataFrame, kind: str, domain: tuple[float, float]) -> alt.Chart:
    """ROME-style heatmap: token rows (subject marked with *), block columns, colour p_restored.

    Args:
        df: Rows with ``position, input_token, subject, layer, p_restored`` of one kind.
        kind: ``hidden``, ``mlp`` or ``attn`` (picks the title and colour scheme).
        domain: Fixed colour domain, shared by the three kinds of one fact (from p_corrupt up).
    """
    df = df.copy()
    star = df["subject"].map({True: " *", False: ""})
    df["token"] = df["position"].astype(str) + ": " + df["input_token"].astype(str) + star
    order = df.drop_duplicates("position").sort_values("position")["token"].tolist()
    label, scheme = KINDS[kind]
    return (
        alt.Chart(df, title=f"Restoring the {label}")
        .mark_rect()
        .encode(
            x=alt.X("layer:O", title="block (layer) restored"),
            y=alt.Y("token:N", sort=order, title="position: token (* = subject)"),
            color=alt.Color(
                "p_restored:Q",
                scale=alt.Scale(scheme=scheme, domain=list(domain), clamp=True),
                title="p(answer) restored",
            ),
            tooltip=[
                "token:N",
                "layer:O",
                alt.Tooltip("rel_depth:Q", format=".2f"),
                alt.Tooltip("p_restored:Q", format=".4f"),
            ],
        )
        .properties(height=max(16 * df["position"].nunique(), 160))
    )


def heatmap_domain(df: pd.DataFrame, p_corrupt: float, p_clean: float) -> tuple[float, float]:
    """Colour domain for one fact: from p_corrupt (floor, as ROME) to the largest probability."""
    top = max(float(df["p_restored"].max()) if len(df) else 0.0, p_clean)
    return (p_corrupt, max(top, p_corrupt + 1e-6))


def prompt_words(prompt: str) -> list[tuple[str, int, int]]:
    """Split the prompt into words with their character spans (for selecting the subject)."""
    return [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", prompt)]


def subject_from_words(prompt: str, picked: list[int]) -> str:
    """Return the prompt text from the first to the last picked word (the subject is contiguous)."""
    words = prompt_words(prompt)
    picked = sorted(i for i in picked if 0 <= i < len(words))
    if not picked:
        return ""
    text = prompt[words[picked[0]][1] : words[picked[-1]][2]]
    return text.strip(" ,.;:!?\"'")


def live_trace(model_name: str, prompt: str, subject: str, kinds: list[str], progress):
    """Trace the student's fact with the same function as precompute; returns per-cell rows.

    Raises:
        ValueError: Bad subject or prompt (the message says what to change).
        TraceCancelled: The progress callback asked to stop.
    """
    from precompute.methods.causal_tracing import CausalTracingConfig, result_frame, trace

    lm = live.get_model(model_name)
    cfg = CausalTracingConfig(kinds=",".join(kinds))
    r = trace(lm, prompt, subject, cfg, progress=progress)
    df = result_frame(lm, r)
    df["model"] = model_name
    df["seconds"] = r.seconds
    return df
