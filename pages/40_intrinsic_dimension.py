"""Intrinsic dimension.

When does the model use most of its dimensions? The intrinsic dimension of each layer's
representations, by relative depth, for every model.
"""

import streamlit as st

from app import charts, data, labels, notebooks, predict, ui
from app.claims_views import peak_finding
from app.representation_views import (
    ESTIMATORS,
    ID_METHOD,
    ID_NOTE,
    POOLINGS,
    SCALES,
    datasets,
    id_curves,
    id_interval_note,
    id_points_summary,
)


def curves() -> None:
    """ID against relative depth, every model, with the estimator visible and explained."""
    st.subheader("Intrinsic dimension by depth")
    ui.badge("precomputed")
    sets = datasets(ID_METHOD) if data.models_for(ID_METHOD) else []
    if not sets:
        ui.no_results(ID_METHOD)
        return
    c1, c2, c3 = st.columns(3)
    estimator = c1.selectbox(
        "Estimator",
        list(ESTIMATORS),
        format_func=lambda e: ESTIMATORS[e][0],
        key="id_estimator",
        bind="query-params",
    )
    pooling = c2.selectbox(
        "One vector per text",
        list(POOLINGS),
        format_func=POOLINGS.get,
        key="id_pooling",
        bind="query-params",
    )
    dataset = c3.selectbox(
        "Stimuli", sets, format_func=labels.dataset, key="id_dataset", bind="query-params"
    )
    st.caption(f"**{ESTIMATORS[estimator][0]}.** {ESTIMATORS[estimator][1]}")
    df = id_curves(estimator, pooling, dataset, "1/1")
    if df.empty:
        st.info("No estimates for this choice (every state was skipped: too few distinct points).")
        return
    predict.show("id_dims", charts.depth_lines(df, "intrinsic dimension (dimensions)"), df)
    st.markdown(id_interval_note(df))
    st.markdown("**Number of distinct points behind each estimate** (the estimate depends on it):")
    st.dataframe(id_points_summary(df), hide_index=True)
    st.markdown(ID_NOTE)
    past = df[df["layer"] > 0]  # the embeddings (state 0) hold tokens, not context
    ui.findings(peak_finding(past, "after the embeddings, the ID", " dimensions", kind="state"))
    ui.download(df, f"intrinsic_dimension_{estimator}_{pooling}_{dataset}")
    notebooks.button(df, f"intrinsic_dimension_{estimator}", ID_METHOD, "intrinsic dimension")
    scale_panel(estimator, pooling, dataset)


def scale_panel(estimator: str, pooling: str, dataset: str) -> None:
    """Show TwoNN on random halves and quarters of the points (scale dependence)."""
    if estimator not in ("twonn", "twonn_ml"):
        return
    st.subheader("Does the estimate depend on how many points we use?")
    all_scales = id_curves(estimator, pooling, dataset, "")
    models = sorted(all_scales["model"].unique())
    model = st.selectbox("Model", models, key="id_scale_model", bind="query-params")
    df = all_scales[all_scales["model"] == model].copy()
    df["points"] = df["variant"].map(lambda v: SCALES.get(v, v))
    st.altair_chart(
        charts.depth_lines(df, "intrinsic dimension (dimensions)", color="points", bands=False),
        width="stretch",
    )
    st.markdown(
        "**What to look for.** The points are split at random into 2 or 4 disjoint subsets and "
        "TwoNN is run on each (DADApy's *decimation*); the band is the 95 % interval over "
        "subsets. If the curves shift with the number of points, the ID is scale dependent "
        "(noise at small scales, curvature at large ones) and only same-N values compare."
    )
    means = df.groupby("points")["mean"].mean().sort_values()
    ui.findings(
        "Mean ID over the states: " + ", ".join(f"{p} {v:.1f}" for p, v in means.items()) + "."
    )
    ui.download(df, f"intrinsic_dimension_scale_{model}", key="dl-scale")
    y_title = "intrinsic dimension (dimensions)"
    notebooks.button(df, f"id_scale_{model}", ID_METHOD, y_title, color="points", stages=False)


def main() -> None:
    """Render the page."""
    ui.page_header(
        "When does the model use most of its dimensions?",
        "Text representations live in a space of hundreds of dimensions, but the points may "
        "fill only a thin, low-dimensional sheet of it. How many dimensions does that sheet "
        "have at each depth?",
        [
            ("Facco et al. 2017 (TwoNN)", "https://doi.org/10.1038/s41598-017-11873-y"),
            ("Valeriani et al. 2023", "https://arxiv.org/abs/2302.00294"),
            ("scikit-dimension", "https://scikit-dimension.readthedocs.io"),
        ],
    )
    st.markdown(
        "Each text becomes one vector per layer: the mean of its token states (the first token "
        "excluded, it behaves like an attention sink) or its last token's state. Exact "
        "duplicate vectors are removed first (a zero distance makes TwoNN undefined). Then the "
        "*intrinsic dimension* of the cloud of vectors is estimated, layer by layer, with "
        "several estimators that make different assumptions -- pick one below."
    )
    curves()
    ui.provenance(
        ID_METHOD,
        None,
        "WikiText-2 paragraphs (cut to `max_tokens`, see the config) or the team's facts, one "
        "forward pass each; "
        "residual states h_0..h_L (h_L before the final norm). TwoNN discards the 10 % largest "
        "ratios (scikit-dimension default); MLE uses K = 5 neighbours. The estimators match "
        "scikit-dimension 0.5.0 to 1e-6 in the tests.",
    )


main()
