"""Data shaping for "Where are facts stored?" (causal tracing): queries and live frames.

The heatmaps are drawn by ``charts.trace_heatmaps``.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st

from app import charts, data, live, notebooks
from app.charts.heat import position_labels

METHOD = "causal_tracing"
KINDS = {
    # kind: (label, colour scheme as in ROME's figures)
    "hidden": ("single hidden state (block output)", "purples"),
    "mlp": ("MLP outputs, window of W layers", "greens"),
    "attn": ("attention outputs, window of W layers", "reds"),
}
GROUPS = {
    "first_subject": "first subject token",
    "middle_subject": "middle subject tokens",
    "last_subject": "last subject token",
    "first_subsequent": "first subsequent token",
    "further": "further tokens",
    "last": "last token",
}
DATASETS = {
    "facts": "team facts",
    "known_1000": "known_1000 (ROME)",
    "facts_known": "team facts + known_1000",
}

INTRO = (
    "Causal tracing adds noise to the subject's embeddings so the model forgets the answer, "
    "then copies back one clean internal state at a time. Where the copy restores the "
    "answer's probability, that state carries the fact."
)
SITES_NOTE = (
    "**What to look for.** ROME found two sites: MLPs in the early-middle layers at the *last "
    "subject token* (the fact is looked up there), and attention in later layers at the *last "
    "token* (the fact is moved to where the answer is predicted). The Evolution of LLM Stages "
    "project reports the site at about the same *relative* depth in every model size."
)


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
    cells.attrs["fact"] = f"{model}_{prompt_id}"  # names the notebook of the heatmaps
    return cells, info


def heatmap_domain(df: pd.DataFrame, p_corrupt: float, p_clean: float) -> tuple[float, float]:
    """Colour domain for one fact: from p_corrupt (floor, as ROME) to the largest probability."""
    top = max(float(df["p_restored"].max()) if len(df) else 0.0, p_clean)
    return (p_corrupt, max(top, p_corrupt + 1e-6))


def trace_settings(dataset: str) -> dict[str, dict]:
    """Per model, the noise samples ``S``, window ``W`` and fact count of the stored runs."""
    runs = data.query(
        "SELECT model, config_json, n_items FROM runs WHERE method = ? AND dataset = ?",
        [METHOD, dataset],
    )
    out = {}
    for r in runs.itertuples():
        cfg = json.loads(r.config_json)
        out[r.model] = {
            "S": cfg.get("samples", cfg.get("n_samples", "?")),
            "W": cfg.get("window", "?"),
            "tokens": cfg.get("token_range", "all"),
        }
    return out


def trace_window_note(dataset: str, df: pd.DataFrame) -> str:
    """How much of each model's depth the stored runs' restoration window covers."""
    from app.claims_facts_views import window_note

    ws = {str(v["W"]) for v in trace_settings(dataset).values()}
    return window_note(f"W{ws.pop()}", df, "ROME used 10 of 48") if len(ws) == 1 else ""


def _settings_text(dataset: str) -> str:
    sets = trace_settings(dataset)
    return "; ".join(f"{m}: S = {v['S']}, W = {v['W']}" for m, v in sorted(sets.items()))


def provenance_note(dataset: str) -> str:
    """How the stored traces were computed, with each run's S and W read from its config."""
    return (
        "Noise: 3 × the standard deviation of the embedding output over the subject tokens of "
        "the team's facts (measured where it is added), S samples drawn once per fact and reused "
        "for every restoration; MLP and attention restored in windows of W layers. Indirect "
        "effect = p_restored − p_corrupt of the clean argmax; a fact's middle (further) tokens "
        f"are averaged first, then mean and 95 % interval over facts. Stored runs: "
        f"{_settings_text(dataset) or 'none'}."
    )


def definitions(dataset: str = "facts") -> str:
    """The page's definitions, with the stored runs' S and W."""
    return (
        "- **p_clean / p_corrupt**: probability of the model's own answer without / with noise "
        "on the subject (mean over S noise samples).\n"
        "- **p_restored**: the same probability after restoring one clean state.\n"
        "- **Indirect effect** = p_restored − p_corrupt (probability).\n"
        "- **Hidden** restores one block's output at one token; **MLP** / **attention** restore "
        "that sublayer's output at one token in a window of W layers around the layer shown.\n"
        "- **Relative depth**: block l of L sits at l / (L − 1).\n"
        f"- Stored runs: {_settings_text(dataset) or 'none'}; the live panel uses the method's "
        "defaults."
    )


#: Seconds between two partial heatmaps of a live trace (each redraw costs a chart).
DRAW_EVERY_S = 1.0


def live_trace(
    model_name: str,
    prompt: str,
    span: tuple[int, int] | None,
    kinds: list[str],
    progress,
    draw: bool = True,
) -> pd.DataFrame:
    """Trace the student's fact with the same engine as precompute, streaming partial heatmaps.

    The trace's steps come coarse first (every 4th block, then the others; the same steps as
    precompute, so the finished numbers are the same): inside a Streamlit run a partial heatmap
    is redrawn at most every :data:`DRAW_EVERY_S` seconds, and each report is a Streamlit call,
    so Stop ends the trace there. The steps run on one core (``threads=1``): the other serves
    other students' requests, which wait at most one block (the trace takes the model's lock
    one block at a time).

    Args:
        model_name: Live model.
        prompt: The fact prompt.
        span: The subject's character span (``ui.subject_picker``), mapped to tokens by
            ``precompute.facts`` exactly as the knockout page maps it.
        kinds: ``hidden``, ``mlp``, ``attn``.
        progress: Callback with the fraction done (or None).
        draw: Draw the partial heatmaps (inside a Streamlit run only).

    Raises:
        ValueError: Bad subject or prompt (the message says what to change).
    """
    from precompute.methods.causal_tracing import CausalTracingConfig, result_frame
    from precompute.model.tracing import trace_frames

    prompt = live.check_prompt(prompt, max_chars=200)
    if span is None:
        raise ValueError("Pick the subject's words first.")
    lm = live.get_model(model_name)
    cfg = CausalTracingConfig(kinds=",".join(kinds))
    subject = prompt[span[0] : span[1]]
    holder = st.empty() if draw and st.runtime.exists() else None
    drawn = 0.0
    for fr in trace_frames(lm, prompt, subject, cfg, char_span=span, threads=1):
        if progress is not None and fr.done:
            progress(fr.fraction)
        if holder is not None and fr.done < fr.total and time.monotonic() - drawn > DRAW_EVERY_S:
            show_partial(holder, result_frame(lm, fr.result), fr)
            drawn = time.monotonic()
    r = fr.result
    df = result_frame(lm, r)
    df["model"] = model_name
    df["seconds"] = r.seconds
    df.attrs["inputs"] = {"model": model_name, "prompt": prompt}  # for the CSV download
    return df


def show_partial(holder, cells: pd.DataFrame, frame) -> None:
    """Draw a partial trace: a block not traced yet shows the nearest traced block's colours."""
    cells = cells.sort_values(["kind", "position", "layer"])
    keys = [cells["kind"], cells["position"]]
    cells["p_restored"] = cells.groupby(keys)["p_restored"].transform(lambda s: s.ffill().bfill())
    cells = cells.dropna(subset=["p_restored"])
    r = frame.result
    kinds = {k: KINDS[k][0] for k in KINDS if k in set(cells["kind"])}
    with holder.container():
        st.caption(
            f"Partial trace: {frame.done} of {frame.total} steps in {r.seconds:.0f} s. Every "
            "4th block first, then the blocks between; a block not traced yet shows its "
            "neighbour's colours."
        )
        domain = heatmap_domain(cells, r.p_corrupt, r.p_clean)
        st.altair_chart(charts.trace_heatmaps(cells, domain, kinds), width="content")


# ------------------------------------------------------------------------------ page widgets


def show_heatmaps(
    cells: pd.DataFrame, p_corrupt: float, p_clean: float, notebook: bool = False
) -> None:
    """Draw the three kinds side by side, one colour domain per fact (precomputed or live).

    With ``notebook`` (precomputed cells), also offer the heatmaps as a notebook.
    """
    st.caption(
        f"p(answer): clean {p_clean:.3f}, subject corrupted {p_corrupt:.3f}. "
        "Colour starts at the corrupted probability."
    )
    domain = heatmap_domain(cells, p_corrupt, p_clean)
    kinds = {k: KINDS[k][0] for k in KINDS if k in set(cells["kind"])}
    st.altair_chart(charts.trace_heatmaps(cells, domain, kinds), width="content")
    if notebook:
        heatmaps_notebook(cells, domain, kinds)
    st.markdown(
        "**What to look for.** Does restoring the *subject's* last token in early-middle layers "
        "bring the answer back? Does the last token take over in later layers? Where the "
        "bright cells move from the subject to the last token, the fact has been moved."
    )


def heatmaps_notebook(cells: pd.DataFrame, domain: tuple[float, float], kinds: dict) -> None:
    """The "open in a notebook" of one fact's heatmaps: a column per kind, as drawn."""
    rows = cells[cells["kind"].isin(list(kinds))].copy()
    rows["token"], _ = position_labels(rows, rows["subject"].astype(bool))
    rows["restored"] = "restoring the " + rows["kind"].map(kinds)
    spec = notebooks.ChartSpec(
        "p(answer) restored",
        "Restoring one state at a time (colour starts at the corrupted probability)",
        kind="heatmap",
        x="layer:O",
        y="token:N",
        color="p_restored",
        x_title="block (layer) restored",
        axis_title="position: token (* = subject)",
        y_sort="position",
        domain=domain,
        column="restored",
    )
    name = f"causal_tracing_{cells.attrs.get('fact', 'fact')}"
    notebooks.button(rows, name, METHOD, spec, table="metrics", key="nb-ct-fact")


def trace_caption(df: pd.DataFrame) -> str:
    """One line on a live trace: model, answer, time."""
    first = df.iloc[0]
    return f"{first['model']}: answer **{first['answer']!r}**, traced in {first['seconds']:.1f} s."
