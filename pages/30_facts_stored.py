"""Where are facts stored?

Causal tracing: corrupt the subject, restore one clean state at a time, watch the answer come back.
"""  # noqa: D400 -- the page title is a question

import streamlit as st

from app import charts, data, live, notebooks, predict, ui
from app.facts_views import (
    DATASETS,
    GROUPS,
    KINDS,
    METHOD,
    datasets,
    fact_cells,
    fact_summary,
    group_curves,
    heatmap_domain,
    live_trace,
    prompt_words,
    subject_from_words,
    trace_heatmap,
    traced_facts,
)


def curves() -> None:
    """Show (a) the average indirect effect by token group, all models on relative depth."""
    st.subheader("Across models: which layers carry the fact, at which token?")
    ui.badge("precomputed")
    have = datasets()
    if not have:
        ui.no_results(METHOD)
        return
    c1, c2 = st.columns(2)
    dataset = c1.selectbox(
        "Facts",
        have,
        format_func=lambda d: DATASETS.get(d, d),
        key="ct_dataset",
        bind="query-params",
    )
    kind = (
        c2.segmented_control(
            "Restored",
            list(KINDS),
            default="mlp",
            key="ct_kind",
            bind="query-params",
            format_func=lambda k: k,
        )
        or "mlp"
    )
    groups = st.multiselect(
        "Token groups",
        list(GROUPS),
        default=["last_subject", "last"],
        format_func=GROUPS.get,
        key="ct_groups",
        bind="query-params",
    )
    df = group_curves(kind, dataset, groups)
    if df.empty:
        st.info("No traced facts for this selection (pick other token groups or facts).")
        return
    predict.show(
        "fact_site",
        charts.depth_lines(df, "average indirect effect (probability)", stroke_dash="token group"),
        df,
    )
    st.markdown(
        "**What to notice.** ROME found two sites: MLPs in the early-middle layers at the *last "
        "subject token* (the fact is looked up there), and attention in later layers at the *last "
        "token* (the fact is moved to where the answer is predicted). Seed 000 reports that the "
        "site sits at about the same *relative* depth in every model size — compare the peaks."
    )
    st.caption("Facts tried and answered correctly (only correct facts are traced):")
    st.dataframe(fact_summary(dataset), hide_index=True, width="stretch")
    ui.download(df, f"causal_tracing_{kind}_{dataset}")
    notebooks.button(df, f"causal_tracing_{kind}", METHOD, "indirect effect", dash="token group")
    ui.provenance(
        METHOD,
        None,
        "Noise: 3 × the standard deviation of the embedding output over the subject tokens of the "
        "team's facts (measured where it is added), S = 10 samples drawn once per fact and reused "
        "for every restoration; windows of W = 10 layers for MLP and attention. Indirect effect = "
        "p_restored − p_corrupt of the clean argmax; a fact's middle (further) tokens are averaged "
        "first, then mean and 95 % interval over facts.",
    )


def heatmaps() -> None:
    """Show (b) one fact as three heatmaps (hidden, MLP, attention)."""
    st.subheader("One fact: every token, every layer")
    ui.badge("precomputed")
    models = data.models_for(METHOD)
    if not models or not datasets():
        return
    c1, c2 = st.columns([1, 1])
    model = c1.selectbox("Model", models, key="ct_model", bind="query-params")
    dataset = c2.selectbox(
        "Facts ",
        datasets(),
        format_func=lambda d: DATASETS.get(d, d),
        key="ct_hm_dataset",
        bind="query-params",
    )
    facts = traced_facts(model, dataset)
    if facts.empty:
        st.info("No traced facts for this model and dataset.")
        return
    labels = dict(zip(facts["prompt_id"], facts["label"]))
    pid = st.selectbox(
        "Fact", list(labels), format_func=labels.get, key="ct_fact", bind="query-params"
    )
    cells, info = fact_cells(model, dataset, pid)
    st.caption(
        "Embedded runs may trace only the last subject token and the last token "
        "(config `token_range`, in 'How this was computed'); the live panel traces all."
    )
    show_heatmaps(cells, info.get("p_corrupt", 0.0), info.get("p_clean", 1.0))
    ui.download(cells, f"causal_tracing_{model}_{pid}", key="dl-ct-fact")


def show_heatmaps(cells, p_corrupt: float, p_clean: float) -> None:
    """Draw the three kinds side by side, one colour domain per fact."""
    st.caption(
        f"p(answer): clean {p_clean:.3f}, subject corrupted {p_corrupt:.3f}. "
        "Colour starts at the corrupted probability."
    )
    domain = heatmap_domain(cells, p_corrupt, p_clean)
    kinds = [k for k in KINDS if k in set(cells["kind"])]
    for col, kind in zip(st.columns(len(kinds) or 1), kinds):
        col.altair_chart(trace_heatmap(cells[cells["kind"] == kind], kind, domain), width="stretch")
    st.markdown(
        "**What to notice.** Restoring the *subject's* last token in early-middle layers brings "
        "the answer back; so does the last token in the late layers. Early on, the information "
        "still lives at the subject; it moves to the last token somewhere in between."
    )


def live_panel() -> None:
    """Trace (c) the student's own fact live."""
    st.subheader("Your fact, live")
    ui.badge("live")
    model = live.model_picker(key="ct_live_model")
    prompt = st.text_input(
        "Prompt (the answer should be the next word)",
        value="The Eiffel Tower is located in the city of",
        key="ct_prompt",
        max_chars=200,
        bind="query-params",
    )
    words = prompt_words(prompt)
    picked = st.pills(
        "Subject: pick its words",
        list(range(len(words))),
        selection_mode="multi",
        default=[1, 2] if len(words) > 2 else None,
        key="ct_subject",
        format_func=lambda i: words[i][0],
        bind="query-params",
    )
    subject = subject_from_words(prompt, picked or [])
    kinds = st.multiselect(
        "Restore",
        list(KINDS),
        default=["hidden"],
        key="ct_live_kinds",
        bind="query-params",
        help="Hidden states are fastest; MLP and attention windows add more.",
    )
    st.caption(f"Subject: **{subject or '—'}**")
    c1, c2 = st.columns([1, 1])
    run = c1.button("Trace", type="primary", key="ct_run")
    stop = c2.button("Stop", key="ct_stop")
    if stop:
        st.info("Trace cancelled.")
    if run:
        try:
            text = live.check_prompt(prompt, max_chars=200)
            bar = st.progress(0.0, text="Tracing ...")
            df = live_trace(
                model,
                text,
                subject,
                kinds or ["hidden"],
                lambda f: bar.progress(f, text=f"Tracing ... {f:.0%}"),
            )
            bar.empty()
            st.session_state["ct_live"] = df
        except ValueError as err:  # includes live.PromptError
            st.warning(str(err))
    df = st.session_state.get("ct_live")
    if df is None:
        return
    first = df.iloc[0]
    st.caption(
        f"{first['model']}: answer **{first['answer']!r}**, traced in {first['seconds']:.1f} s."
    )
    show_heatmaps(df, float(first["p_corrupt"]), float(first["p_clean"]))
    ui.download(df, "causal_tracing_live", key="dl-ct-live")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Where are facts stored?",
        "Where along its depth does a model keep a fact like 'The Eiffel Tower is in Paris' — and "
        "is it the same relative depth in small and large models?",
        [
            ("Meng et al. 2022 (ROME)", "https://arxiv.org/abs/2202.05262"),
            ("ROME code", "https://github.com/kmeng01/rome"),
        ],
    )
    st.markdown(
        "Causal tracing adds noise to the subject's embeddings so the model forgets the answer, "
        "then copies back one clean internal state at a time. Where the copy restores the "
        "answer's probability, that state carries the fact."
    )
    with st.expander("Definitions"):
        st.markdown(
            "- **p_clean / p_corrupt**: probability of the model's own answer without / with noise "
            "on the subject (mean over 10 noise samples).\n"
            "- **p_restored**: the same probability after restoring one clean state.\n"
            "- **Indirect effect** = p_restored − p_corrupt (probability).\n"
            "- **Hidden** restores one block's output at one token; **MLP** / **attention** "
            "restore that sublayer's output at one token in a window of 10 layers around the "
            "layer shown.\n"
            "- **Relative depth**: block l of L sits at l / (L − 1)."
        )
    curves()
    heatmaps()
    live_panel()


main()
