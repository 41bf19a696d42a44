"""When does the model know the answer?

Linear probes on each layer's last-token state, beside the activation-patching "uses" curve, and
the gap between knowing and using per model.
"""  # noqa: D400 -- the page title is a question

import streamlit as st

from app import charts, labels, notebooks, ui
from app.claims_facts_views import template_finding
from app.quality_views import (
    INTRO,
    KNOWS_NOTE,
    PATCH_METHOD,
    PROBE_METHOD,
    PROBE_METRICS,
    PROVENANCE,
    USES,
    datasets,
    knows_uses_frame,
    knows_uses_gap,
    probe_curves,
    probe_sizes,
)


def knows_vs_uses(dataset: str) -> None:
    """Probe accuracy, control and the patching effect on one relative-depth axis."""
    st.subheader("Decodable (probe) against used (patching)")
    ui.badge("precomputed")
    df = knows_uses_frame(dataset)
    if not (df["curve"] == USES).any():
        st.info(
            f"The loaded results have no `{PATCH_METHOD}` runs (variant `resid_last`) on these "
            "facts yet, so only the probe curves are shown and the gap cannot be computed."
        )
    models = sorted(df["model"].unique())
    model = st.selectbox("Model", models, key="kvu_model", bind="query-params")
    one = df[df["model"] == model]
    st.altair_chart(
        charts.depth_lines(one, "accuracy or normalised effect (fraction)", color="curve"),
        width="stretch",
    )
    for curve, unit in (("probe accuracy", "cross-validation folds"), (USES, "fact pairs")):
        ui.sample_caption(one[one["curve"] == curve], f"{curve}: {unit}")
    st.markdown(KNOWS_NOTE)
    ui.findings(template_finding(probe_curves(dataset, ["probe_acc", "template_acc"])))
    ui.download(one, f"know_vs_use_{model}_{dataset}", key="dl-kvu")
    y_title = "accuracy or normalised effect (fraction)"
    methods = [PROBE_METHOD, PATCH_METHOD]
    notebooks.button(one, f"know_vs_use_{model}", methods, y_title, color="curve")


def gap_table(dataset: str) -> None:
    """Show the knows layer, the uses layer and the gap, per model."""
    st.subheader("The gap, per model")
    gap = knows_uses_gap(dataset)
    if gap.empty:
        st.info("No probe results to compute the knows layer from.")
        return
    st.dataframe(gap, hide_index=True, width="stretch")
    st.caption(
        "Knows = first state whose probe accuracy is at least 90 % of the best state's. Uses = "
        "per fact, the first state where patching the clean last-token state restores at least "
        "half of the clean-minus-corrupted logit difference, averaged over facts (METHODS.md "
        "B3, our protocol: Gandikota et al. give none). Empty cells: no patching results for that "
        "model. Positive gap = the answer is decodable before it is used."
    )


def all_models(dataset: str) -> None:
    """Probe accuracy and selectivity of every model on relative depth."""
    st.subheader("Across models")
    metric = (
        st.segmented_control(
            "Curve",
            list(PROBE_METRICS),
            default="probe_acc",
            key="kvu_metric",
            bind="query-params",
            format_func=lambda m: PROBE_METRICS[m][0],
        )
        or "probe_acc"
    )
    df = probe_curves(dataset, [metric])
    st.altair_chart(
        charts.depth_lines(df, f"{PROBE_METRICS[metric][0]} (fraction)"), width="stretch"
    )
    st.caption(f"**{PROBE_METRICS[metric][0]}**: {PROBE_METRICS[metric][1]}.")
    ui.sample_caption(df, "cross-validation folds")
    sizes = probe_sizes(dataset)
    if len(sizes):
        st.markdown("Examples and answer classes behind each probe:")
        st.dataframe(sizes, hide_index=True)
    ui.download(df, f"probes_{metric}_{dataset}", key="dl-probes")
    notebooks.button(df, f"probes_{metric}", PROBE_METHOD, f"{PROBE_METRICS[metric][0]} (fraction)")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "When does the model know the answer?",
        "At which layer can a simple linear read-out already tell what the model will answer "
        "-- and is that the layer where the model actually uses the answer?",
        [
            ("Alain & Bengio 2016", "https://arxiv.org/abs/1610.01644"),
            ("Hewitt & Liang 2019", "https://arxiv.org/abs/1909.03368"),
            ("Zhang & Nanda 2023", "https://arxiv.org/abs/2309.16042"),
        ],
    )
    st.markdown(INTRO)
    sets = datasets(PROBE_METHOD)
    if not sets:
        ui.no_results(PROBE_METHOD)
        return
    dataset = st.selectbox(
        "Facts", sets, format_func=labels.dataset, key="kvu_dataset", bind="query-params"
    )
    knows_vs_uses(dataset)
    gap_table(dataset)
    all_models(dataset)
    ui.provenance(PROBE_METHOD, None, PROVENANCE)


main()
