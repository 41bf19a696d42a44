"""Where are facts stored?

Causal tracing: corrupt the subject, restore one clean state at a time, watch the answer come back.
"""  # noqa: D400 -- the page title is a question

import streamlit as st

from app import charts, data, live, notebooks, predict, ui
from app import live_panel as panel
from app.claims_facts_views import sites_finding
from app.facts_views import (
    DATASETS,
    GROUPS,
    INTRO,
    KINDS,
    METHOD,
    SITES_NOTE,
    datasets,
    definitions,
    fact_cells,
    fact_summary,
    group_curves,
    live_trace,
    provenance_note,
    show_heatmaps,
    trace_caption,
    trace_window_note,
    traced_facts,
)


def curves() -> None:
    """Show (a) the average indirect effect by token group, all models on relative depth."""
    st.subheader("Across models: which layers carry the fact, at which token?")
    ui.badge("precomputed")
    st.session_state.setdefault("ct_kind", "mlp")
    have = datasets()
    if not have:
        ui.no_results(METHOD)
        return
    c1, c2 = st.columns(2)
    dataset = ui.choice(c1, "Facts", have, DATASETS, key="ct_dataset", bind="query-params")
    kind = c2.segmented_control("Restored", list(KINDS), key="ct_kind", bind="query-params")
    kind = kind or "mlp"
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
    ui.sample_caption(df, "facts traced")
    st.markdown(SITES_NOTE)
    mlp, attn = (
        group_curves("mlp", dataset, ["last_subject"]),
        group_curves("attn", dataset, ["last"]),
    )
    ui.findings(sites_finding(mlp, attn) + " " + trace_window_note(dataset, mlp))
    st.caption("Facts tried and answered correctly (only correct facts are traced):")
    st.dataframe(fact_summary(dataset), hide_index=True, width="stretch")
    ui.download(df, f"causal_tracing_{kind}_{dataset}")
    notebooks.button(df, f"causal_tracing_{kind}", METHOD, "indirect effect", dash="token group")
    ui.provenance(METHOD, None, provenance_note(dataset))


def heatmaps() -> None:
    """Show (b) one fact as three heatmaps (hidden, MLP, attention)."""
    st.subheader("One fact: every token, every layer")
    ui.badge("precomputed")
    models, sets = data.models_for(METHOD), datasets()
    if not models or not sets:
        return
    c1, c2 = st.columns([1, 1])
    model = c1.selectbox("Model", models, key="ct_model", bind="query-params")
    dataset = ui.choice(c2, "Facts ", sets, DATASETS, key="ct_hm_dataset", bind="query-params")
    facts = traced_facts(model, dataset)
    if facts.empty:
        st.info("No traced facts for this model and dataset.")
        return
    labels = dict(zip(facts["prompt_id"], facts["label"]))
    pid = ui.choice(st, "Fact", list(labels), labels, key="ct_fact", bind="query-params")
    cells, info = fact_cells(model, dataset, pid)
    st.caption(
        "Embedded runs may trace only the last subject token and the last token "
        "(config `token_range`, in 'How this was computed'); the live panel traces all."
    )
    show_heatmaps(cells, info.get("p_corrupt", 0.0), info.get("p_clean", 1.0), notebook=True)
    ui.download(cells, f"causal_tracing_{model}_{pid}", key="dl-ct-fact")


def live_panel() -> None:
    """Trace (c) the student's own fact live."""
    st.subheader("Your fact, live")
    ui.badge("live")
    model = live.model_picker(key="ct_live_model")
    prompt = ui.fact_prompt(key="ct_prompt", bind="query-params")
    span = ui.subject_picker(prompt, key="ct_subject", bind="query-params")
    kinds = st.multiselect(
        "Restore",
        list(KINDS),
        default=["hidden"],
        key="ct_live_kinds",
        bind="query-params",
        help="Hidden states are fastest; MLP and attention windows add more.",
    )
    df = panel.run(
        "Trace",
        "ct_live",
        lambda report: live_trace(model, prompt, span, kinds or ["hidden"], report),
        "Tracing ...",
        progress=True,
        stoppable=True,
    )
    if df is None:
        return
    st.caption(trace_caption(df))
    show_heatmaps(df, float(df["p_corrupt"].iloc[0]), float(df["p_clean"].iloc[0]))
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
    st.markdown(INTRO)
    with st.expander("Definitions"):
        st.markdown(definitions())
    curves()
    heatmaps()
    live_panel()


main()
