"""Representation quality.

Skean et al.'s metrics -- prompt and dataset entropy, curvature, and invariance to typos (InfoNCE,
LiDAR, DiME) -- layer by layer, by relative depth.
"""

import streamlit as st

from app import charts, labels, notebooks, ui
from app.claims_views import peak_finding
from app.quality_views import (
    QUALITY_METHOD,
    QUALITY_METRICS,
    datasets,
    quality_curves,
    quality_overview,
)

DEFINITIONS = "\n".join(
    f"- **{label}** ({unit}): {text}" for label, _, unit, text in QUALITY_METRICS.values()
)


def one_metric(dataset: str) -> None:
    """One metric against relative depth, every model."""
    st.subheader("One metric, every model")
    ui.badge("precomputed")
    metric = st.selectbox(
        "Metric",
        list(QUALITY_METRICS),
        key="q_metric",
        bind="query-params",
        format_func=lambda m: QUALITY_METRICS[m][0],
    )
    label, _, unit, text = QUALITY_METRICS[metric]
    df = quality_curves(metric, dataset)
    if df.empty:
        st.info("No values for this metric in the loaded results.")
        return
    st.caption(f"**{label}.** {text}")
    st.altair_chart(charts.depth_lines(df, f"{label} ({unit})"), width="stretch")
    ui.sample_caption(df, "prompts (1 = one value over the whole prompt set)")
    views = sorted(v for v in df["grp"].unique() if v)
    if views:
        st.caption(
            "Augmented views per prompt: " + ", ".join(views) + " (SKEAN uses 16 for "
            "LiDAR; fewer on the CPU runs, recorded in each run's config)."
        )
    ui.download(df, f"quality_{metric}_{dataset}", key="dl-q-one")
    notebooks.button(df, f"quality_{metric}_{dataset}", QUALITY_METHOD, f"{label} ({unit})")


def overview(dataset: str) -> None:
    """Every metric for one model, each scaled to its own range, to compare where they peak."""
    st.subheader("Every metric, one model")
    df = quality_overview(dataset)
    if df.empty:
        return
    model = st.selectbox("Model", sorted(df["model"].unique()), key="q_model", bind="query-params")
    one = df[df["model"] == model]
    chart = charts.scaled_lines(
        one,
        "scaled",
        "scaled to this model's range (0 = min, 1 = max)",
        "label",
        "metric",
        f"Every quality metric of {model}, each on its own range",
    )
    st.altair_chart(chart, width="stretch")
    st.markdown(
        "**What to look for.** Skean et al. find that the best layers for downstream tasks are "
        "often in the middle, where prompt entropy dips (the model compresses each prompt), "
        "while invariance metrics (low InfoNCE, high LiDAR and DiME) are best. Curvature below "
        "2π/3 ≈ 2.09 rad means token trajectories are straighter than random. Each line is "
        "scaled to its own range here: read positions of peaks and dips, not heights."
    )
    pe = one[one["metric"] == "prompt_entropy"]
    ui.findings(peak_finding(pe, "prompt entropy", fmt=".3f", kind="state", lowest=True))
    ui.download(one, f"quality_overview_{model}_{dataset}", key="dl-q-all")
    notebooks.button(
        one,
        f"quality_overview_{model}",
        QUALITY_METHOD,
        "scaled to this model's range (0 = min, 1 = max)",
        title=f"Every quality metric of {model}, each on its own range",
        y="scaled",
        color="label",
        color_title="metric",
        band=False,
        stages=False,
        domain=(0.0, 1.0),
    )


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Representation quality",
        "Which layers give the best representations? Measure, layer by layer, how much each "
        "layer compresses a prompt, how straight its token trajectory is, and how well it "
        "ignores typos.",
        [
            ("Skean et al. 2025", "https://arxiv.org/abs/2502.02013"),
            ("Hosseini & Fedorenko 2023", "https://arxiv.org/abs/2311.04930"),
            ("Thilak et al. 2024 (LiDAR)", "https://arxiv.org/abs/2312.04000"),
        ],
    )
    st.markdown(
        "Each prompt's token states at each layer are centred and scaled to unit length, then "
        "summarised by matrix entropies (how many directions the tokens or prompts spread "
        "over), by the angles between successive steps of the token trajectory, and by how "
        "much a prompt's vector moves when the text gets typos (augmented copies)."
    )
    with st.expander("What each metric measures"):
        st.markdown(DEFINITIONS)
    sets = datasets(QUALITY_METHOD)
    if not sets:
        ui.no_results(QUALITY_METHOD)
        return
    dataset = st.selectbox(
        "Stimuli", sets, format_func=labels.dataset, key="q_dataset", bind="query-params"
    )
    one_metric(dataset)
    overview(dataset)
    ui.provenance(
        QUALITY_METHOD,
        None,
        "Entropies with α = 1 (von Neumann, implemented as the limit), eigenvalues in float64, "
        "normalised by log min(T, D) ('maxEntropy'). Curvature from difference vectors of the "
        "raw token states (position 0 excluded). Augmentations are our offline stand-in for "
        "nlpaug (a word split, random character edits, keyboard typos; seeded per prompt and "
        "view). InfoNCE τ = 0.1 and DiME (10 permutations) use 2 views; LiDAR δ = 1e-4.",
    )


main()
