"""When is the fact moved?

Attention knockout: cut the edges into the last token, a window of layers at a time.
"""  # noqa: D400 -- the page title is a question

import streamlit as st

from app import data, live, notebooks, predict, ui
from app.facts_views import prompt_words
from app.flow_views import (
    DATASETS,
    EDGES,
    METHOD,
    PATCH_METHOD,
    PATCH_VARIANTS,
    datasets,
    fact_counts,
    knockout_chart,
    knockout_curves,
    live_knockout,
    patching_chart,
    patching_curves,
    uses_table,
    windows,
    word_span,
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
    dataset = c1.selectbox(
        "Facts",
        have,
        format_func=lambda d: DATASETS.get(d, d),
        key="ko_dataset",
        bind="query-params",
    )
    window = c2.selectbox(
        "Window",
        windows(dataset),
        key="ko_window",
        bind="query-params",
        help="W layers are knocked out together, centred on each layer.",
    )
    models = data.models_for(METHOD)
    picked = c3.multiselect("Models", models, default=models, key="ko_models", bind="query-params")
    df = knockout_curves(dataset, window, picked)
    if not predict.ask_first("fact_moved", df):
        return
    for col, (grp, label) in zip(st.columns(3), EDGES.items()):
        col.markdown(f"**{label}**")
        chart = predict.draw("fact_moved", knockout_chart(df[df["grp"] == grp]))
        col.altair_chart(chart, width="stretch")
    st.markdown(
        "**What to notice.** Cutting the edges from the *subject* to the last token hurts only in "
        "a band of middle layers: that is when the subject's information is moved to where the "
        "answer is predicted; before and after, the same cut barely matters. The grey band is "
        "where seed 000 reports the drop (40–70 % of depth) — compare it with your models. "
        "Cutting the *non-subject* tokens (the relation words) hurts earlier; the last token's "
        "edge to itself matters little."
    )
    st.caption("Facts tried, and answered correctly (only those are knocked out):")
    st.dataframe(fact_counts(METHOD, dataset), hide_index=True, width="stretch")
    ui.download(df, f"attention_knockout_{dataset}_{window}", key="dl-ko")
    notebooks.button(df, f"knockout_{window}", METHOD, "change (%)", dash="edges", table="metrics")
    ui.provenance(
        METHOD,
        picked,
        "Per fact: the model's own top token o at the last position and its probability p_base. "
        "For each centre layer, every head of the W layers around it gets a pre-softmax score of "
        "−∞ on the cut edges (into the last token only), so the other keys are renormalised; "
        "relative change = 100·(p_new − p_base)/p_base. Mean and 95 % interval over the facts the "
        "model answers correctly. Window and facts as recorded in the run's config.",
    )


def patching() -> None:
    """Show (b) the activation-patching curve: from which layer is the answer used?"""
    st.subheader("From which layer does the model use the answer?")
    ui.badge("precomputed")
    have = datasets(PATCH_METHOD)
    if not have:
        ui.no_results(PATCH_METHOD)
        return
    c1, c2 = st.columns([1, 2])
    dataset = c1.selectbox(
        "Facts ",
        have,
        format_func=lambda d: DATASETS.get(d, d),
        key="ap_dataset",
        bind="query-params",
    )
    variant = c2.selectbox(
        "Patched",
        list(PATCH_VARIANTS),
        format_func=PATCH_VARIANTS.get,
        key="ap_variant",
        bind="query-params",
    )
    df = patching_curves(dataset, variant)
    st.altair_chart(patching_chart(df), width="stretch")
    st.markdown(
        "**What to notice.** Copying the clean last-token state into the run with the swapped "
        "subject restores the answer only from some depth on: before it, the last token does not "
        "yet hold the fact. The layer where the effect first passes 0.5 (dashed line) is where "
        "the model has *used* the fact; it should sit after the knockout band above."
    )
    st.dataframe(uses_table(dataset, variant), hide_index=True, width="stretch")
    st.dataframe(fact_counts(PATCH_METHOD, dataset), hide_index=True, width="stretch")
    ui.download(df, f"activation_patching_{dataset}_{variant}", key="dl-ap")
    ui.provenance(
        PATCH_METHOD,
        None,
        "Pairs: the clean fact prompt and the same prompt with another subject of the same "
        "relation that has the same tokens outside the subject (our protocol, METHODS.md B3). "
        "Metric: logit(o) − logit(o′), o and o′ the two runs' answers; effect = (patched − "
        "corrupted)/(clean − corrupted). Mean and 95 % interval over pairs.",
    )


def live_panel() -> None:
    """Knock out (c) the student's own fact live."""
    st.subheader("Your fact, live")
    ui.badge("live")
    model = live.model_picker(key="ko_live_model")
    prompt = st.text_input(
        "Prompt (the answer should be the next word)",
        value="The Eiffel Tower is located in the city of",
        key="ko_prompt",
        max_chars=200,
        bind="query-params",
    )
    words = prompt_words(prompt)
    picked = st.pills(
        "Subject: pick its words",
        list(range(len(words))),
        selection_mode="multi",
        default=[1, 2] if len(words) > 2 else None,
        key="ko_subject",
        format_func=lambda i: words[i][0],
        bind="query-params",
    )
    span = word_span(prompt, picked or [])
    c1, c2 = st.columns(2)
    window = c1.slider("Window (layers)", 1, 15, 9, key="ko_live_window", bind="query-params")
    answer = c2.text_input("Expected answer (optional)", key="ko_answer", bind="query-params")
    st.caption(f"Subject: **{prompt[span[0] : span[1]] if span else '—'}**")
    if st.button("Knock out", type="primary", key="ko_run"):
        try:
            text = live.check_prompt(prompt, max_chars=200)
            if span is None:
                raise ValueError("Pick the subject's words first.")
            with st.spinner("Running 1 + 3 × L knockouts ..."):
                st.session_state["ko_live"] = live_knockout(model, text, span, window, answer)
        except ValueError as err:  # includes live.PromptError
            st.warning(str(err))
    df = st.session_state.get("ko_live")
    if df is None:
        return
    first = df.iloc[0]
    st.caption(
        f"{first['model']} predicts **{first['prediction']!r}** (p = {first['p_base']:.3f}); "
        f"subject tokens: {first['subject_tokens']}; window {first['window']} layers."
    )
    if answer.strip() and not bool(first["correct"]):
        st.info(
            "The model does not answer with your expected word: the curves follow its own "
            "prediction, so they show how *that* answer is assembled."
        )
    st.altair_chart(knockout_chart(df, color="edges"), width="stretch")
    ui.download(df, "attention_knockout_live", key="dl-ko-live")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "When is the fact moved?",
        "The model looks the fact up at the subject's tokens. At which depth is it moved to the "
        "last token, where the answer is predicted — and is it the same relative depth in every "
        "model, as seed 000 finds?",
        [
            ("Geva et al. 2023", "https://arxiv.org/abs/2304.14767"),
            ("Meng et al. 2022", "https://arxiv.org/abs/2202.05262"),
            ("Zhang & Nanda 2023", "https://arxiv.org/abs/2309.16042"),
        ],
    )
    st.markdown(
        "**Method.** Attention is the only way information moves between tokens. Block the "
        "attention edges into the last token — from the subject, from the other words, or from "
        "itself — in a window of layers, and measure how much the probability of the model's "
        "answer changes. Sliding the window through the depth shows *when* each edge set "
        "carries what the answer needs. Activation patching asks the complementary question: "
        "from which layer on does the last token's state already hold the answer?"
    )
    knockout()
    patching()
    live_panel()


main()
