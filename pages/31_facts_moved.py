"""When is the fact moved?

Attention knockout: cut the edges into the last token, a window of layers at a time.
"""  # noqa: D400 -- the page title is a question

import streamlit as st

from app import charts, data, labels, live, predict, ui
from app import live_panel as panel
from app.claims_facts_views import knockout_finding, window_note
from app.flow_views import (
    DATASETS,
    EDGES,
    KNOCKOUT_NOTE,
    KNOCKOUT_PROVENANCE,
    METHOD,
    METHOD_NOTE,
    PATCH_METHOD,
    PATCH_NOTE,
    PATCH_PROVENANCE,
    PATCH_VARIANTS,
    SEED_BAND,
    SEED_BAND_LABEL,
    datasets,
    describe_live,
    fact_counts,
    knockout_curves,
    knockout_notebook,
    live_knockout,
    patching_curves,
    patching_notebook,
    uses_table,
    windows,
)


def knockout() -> None:
    """Show (a) the knockout curves of the three edge sets, all models on relative depth."""
    st.subheader("Across models: where does cutting attention hurt the answer?")
    ui.badge("precomputed")
    have = datasets(METHOD)
    if not have:
        ui.no_results(METHOD)
        return
    c1, c2, c3 = st.columns([1, 1, 2])
    dataset = ui.choice(c1, "Facts", have, DATASETS, key="ko_dataset", bind="query-params")
    window = c2.selectbox(
        "Window",
        windows(dataset),
        format_func=labels.window,
        key="ko_window",
        bind="query-params",
        help="W layers are knocked out together, centred on each layer.",
    )
    models = data.models_for(METHOD)
    picked = c3.multiselect("Models", models, default=models, key="ko_models", bind="query-params")
    df = knockout_curves(dataset, window, picked)
    if not predict.ask_first("fact_moved", df):
        return
    for grp, label in ((g, x) for g, x in EDGES.items() if (df["grp"] == g).any()):
        chart = charts.knockout_chart(
            df[df["grp"] == grp], SEED_BAND, SEED_BAND_LABEL, f"Cutting the edges {label}"
        )
        st.altair_chart(predict.draw("fact_moved", chart), width="stretch")
        knockout_notebook(df[df["grp"] == grp], grp, window)
    ui.sample_caption(df, "facts answered correctly")
    st.markdown(KNOCKOUT_NOTE)
    ui.findings(knockout_finding(df, SEED_BAND) + " " + window_note(window, df))
    st.caption("Facts tried, and answered correctly (only those are knocked out):")
    st.dataframe(fact_counts(METHOD, dataset), hide_index=True, width="stretch")
    ui.download(df, f"attention_knockout_{dataset}_{window}", key="dl-ko")
    ui.provenance(METHOD, picked, KNOCKOUT_PROVENANCE)


def patching() -> None:
    """Show (b) the activation-patching curve: from which layer is the answer used?"""
    st.subheader("From which layer does the model use the answer?")
    ui.badge("precomputed")
    have = datasets(PATCH_METHOD)
    if not have:
        ui.no_results(PATCH_METHOD)
        return
    c1, c2 = st.columns([1, 2])
    dataset = ui.choice(c1, "Facts ", have, DATASETS, key="ap_dataset", bind="query-params")
    variant = ui.choice(
        c2, "Patched", list(PATCH_VARIANTS), PATCH_VARIANTS, key="ap_variant", bind="query-params"
    )
    df = patching_curves(dataset, variant)
    st.altair_chart(
        charts.patching_chart(df, SEED_BAND, SEED_BAND_LABEL, "Patching the clean state back in"),
        width="stretch",
    )
    ui.sample_caption(df, "fact pairs")
    st.markdown(PATCH_NOTE)
    st.dataframe(uses_table(dataset, variant), hide_index=True, width="stretch")
    st.dataframe(fact_counts(PATCH_METHOD, dataset), hide_index=True, width="stretch")
    ui.download(df, f"activation_patching_{dataset}_{variant}", key="dl-ap")
    patching_notebook(df, dataset, variant)
    ui.provenance(PATCH_METHOD, None, PATCH_PROVENANCE)


def live_panel() -> None:
    """Knock out (c) the student's own fact live."""
    st.subheader("Your fact, live")
    ui.badge("live")
    model = live.model_picker(key="ko_live_model")
    prompt = ui.fact_prompt(key="ko_prompt", bind="query-params")
    span = ui.subject_picker(prompt, key="ko_subject", bind="query-params")
    c1, c2 = st.columns(2)
    window = c1.slider("Window (layers)", 1, 15, 9, key="ko_live_window", bind="query-params")
    answer = c2.text_input("Expected answer (optional)", key="ko_answer", bind="query-params")
    df = panel.run(
        "Knock out",
        "ko_live",
        lambda: live_knockout(model, prompt, span, window, answer),
        "Running 1 + 3 × L knockouts ...",
        stoppable=True,
    )
    if df is None:
        return
    st.markdown(describe_live(df, answer))
    st.altair_chart(
        charts.knockout_chart(
            df, SEED_BAND, SEED_BAND_LABEL, "Your fact: cutting each edge set", color="edges"
        ),
        width="stretch",
    )
    ui.download(df, "attention_knockout_live", key="dl-ko-live")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "When is the fact moved?",
        "The model looks the fact up at the subject's tokens. At which depth is it moved to the "
        "last token, where the answer is predicted — and is it the same relative depth in every "
        "model, as Gandikota et al. (Evolution of LLM Stages) find?",
        [
            ("Geva et al. 2023", "https://arxiv.org/abs/2304.14767"),
            ("Meng et al. 2022", "https://arxiv.org/abs/2202.05262"),
            ("Zhang & Nanda 2023", "https://arxiv.org/abs/2309.16042"),
        ],
    )
    st.markdown(METHOD_NOTE)
    knockout()
    patching()
    live_panel()


main()
