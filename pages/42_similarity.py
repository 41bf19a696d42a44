"""Representational similarity.

How do representations evolve? Layer x layer similarity of representational geometry, within a
model and across models at the same relative depth, and live on the student's own sentences.
"""

import streamlit as st

from app import charts, labels, live, ui
from app import live_panel as panel
from app.claims_facts_views import matched_finding, within_finding
from app.representation_views import (
    ACROSS_NOTE,
    DEFAULT_SENTENCES,
    DEPTH_0,
    DEPTH_A,
    INTRO,
    LIVE_NORMS,
    MIN_LIVE_SENTENCES,
    PROVENANCE,
    RSA_METHOD,
    VARIANT_LABELS,
    WITHIN_NOTE,
    cross_similarity,
    datasets,
    live_rdm_note,
    live_rsa_frames,
    matched_depth,
    rsa_models,
    similarity_downloads,
    similarity_variants,
    within_similarity,
)


def within() -> tuple[str, str, list[str]] | None:
    """Show the stored within-model matrices; return the choices for the cross-model view."""
    st.subheader("Within a model: which layers share a geometry?")
    ui.badge("precomputed")
    sets = datasets(RSA_METHOD)
    if not sets:
        ui.no_results(RSA_METHOD)
        return None
    c1, c2, c3 = st.columns(3)
    dataset = c1.selectbox(
        "Stimuli", sets, format_func=labels.dataset, key="rsa_dataset", bind="query-params"
    )
    var = similarity_variants(dataset)
    variant = ui.choice(c2, "Vectors", var, VARIANT_LABELS, key="rsa_variant", bind="query-params")
    models = rsa_models(dataset)
    model = c3.selectbox("Model", models, key="rsa_model", bind="query-params")
    df = within_similarity(model, dataset, variant)
    if df.empty:
        st.info("No similarity rows for this choice.")
        return None
    st.altair_chart(
        charts.similarity_heatmap(df, "depth_a", "depth_b", DEPTH_0, "relative depth"),
        width="stretch",
    )
    st.caption(f"{int(df['n_stimuli'].iloc[0])} stimuli; ρ below 0 is drawn as 0.")
    st.markdown(WITHIN_NOTE)
    ui.findings(within_finding(df))
    similarity_downloads(df, f"rsa_{model}_{dataset}", "dl-within", DEPTH_0, "relative depth")
    return dataset, variant, models


def across(dataset: str, variant: str, models: list[str]) -> None:
    """Compare two models' RDMs on a common relative-depth grid."""
    st.subheader("Across models: do layers at the same relative depth agree?")
    ui.badge("precomputed")
    if len(models) < 2:
        st.info("Only one model has RSA results on these stimuli; two are needed.")
        return
    c1, c2 = st.columns(2)
    model_a = c1.selectbox("Model A", models, index=0, key="rsa_model_a", bind="query-params")
    model_b = c2.selectbox("Model B", models, index=1, key="rsa_model_b", bind="query-params")
    try:
        df = cross_similarity(model_a, model_b, dataset, variant)
    except ValueError as err:
        st.warning(str(err))
        return
    st.altair_chart(
        charts.similarity_heatmap(df, "depth_a", "depth_b", DEPTH_A, "relative depth, model B"),
        width="stretch",
    )
    diag = matched_depth(df, f"{model_a} vs {model_b}")
    st.altair_chart(
        charts.depth_lines(diag, f"{charts.SIM_TITLE} at equal depth (correlation)"),
        width="stretch",
    )
    st.markdown(ACROSS_NOTE.format(n=int(df["n_stimuli"].iloc[0])))
    ui.findings(matched_finding(diag))
    name = f"rsa_{model_a}_vs_{model_b}_{dataset}"
    similarity_downloads(df, name, "dl-across", DEPTH_A, "relative depth, model B", diag)


def live_panel() -> None:
    """Run the student's sentences through the same RSA functions."""
    st.subheader("Your sentences, live")
    ui.badge("live")
    model = live.model_picker(key="rsa_live_model")
    text = panel.prompt_box(
        f"At least {MIN_LIVE_SENTENCES} sentences, one per line",
        value=DEFAULT_SENTENCES,
        key="rsa_live_text",
    )
    norm = ui.choice(
        st, "Normalisation", list(LIVE_NORMS), LIVE_NORMS, key="rsa_live_norm", bind="query-params"
    )
    res = panel.run(
        "Compare the layers",
        "rsa_live",
        lambda: live_rsa_frames(model, text, live.config().max_live_tokens, norm),
        "Running the model on each sentence ...",
    )
    if res is None:
        return
    sim = charts.similarity_heatmap(
        res["similarity"], "depth_a", "depth_b", DEPTH_0, "relative depth"
    )
    st.altair_chart(sim, width="stretch")
    n = res["n_layers"]
    layer = st.slider("RDM of state", 0, n, n // 2, key="rsa_live_layer", bind="query-params")
    rdm = res["rdm"][res["rdm"]["layer"] == layer]
    st.altair_chart(charts.rdm_heatmap(rdm), width="stretch")
    st.markdown(live_rdm_note(res, layer))
    ui.download(res["rdm"], "rsa_live_rdms", key="dl-live-rdm")
    ui.download(res["similarity"], "rsa_live_similarity", key="dl-live-sim")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "How do representations evolve?",
        "If two layers arrange the same sentences in the same way -- the same pairs close, the "
        "same pairs far apart -- they share a representational geometry. Where along the depth "
        "does that geometry change, and do different models change at the same relative depth?",
        [("Kriegeskorte et al. 2008", "https://doi.org/10.3389/neuro.06.004.2008")],
    )
    st.markdown(INTRO)
    picked = within()
    if picked:
        across(*picked)
    ui.provenance(RSA_METHOD, None, PROVENANCE)
    live_panel()


main()
