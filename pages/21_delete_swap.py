"""Delete or swap a layer.

How robust is a language model to losing one of its layers, or to running two of them out of order?
"""

import streamlit as st

from app import charts, live, notebooks, predict, ui
from app import live_panel as panel
from app.robustness_views import (
    ACTIONS,
    BLOCK_NOTE,
    DEFINITIONS,
    INTERVENTIONS,
    INTRO,
    METHODS,
    METRICS,
    PROVENANCE,
    TRY_THIS,
    depth_frame,
    edge_summary,
    finding,
    live_intervention,
    live_table,
    models,
    n_blocks,
)


def precomputed() -> None:
    """Curves over relative depth: every model, deletion and swap overlaid."""
    st.subheader("Across models: which layers can the model do without?")
    ui.badge("precomputed")
    have = models()
    if not have:
        ui.no_results(METHODS[0])
        return
    c1, c2 = st.columns([1, 1])
    picked = c1.multiselect("Models", have, default=have, key="models", bind="query-params")
    labels = list(INTERVENTIONS.values())
    shown = c2.multiselect(
        "Interventions",
        labels,
        default=[labels[0], labels[-1]],
        key="interventions",
        bind="query-params",
    )
    metric = (
        st.segmented_control(
            "Metric",
            list(METRICS),
            default="kl",
            key="metric",
            bind="query-params",
            format_func=lambda m: METRICS[m][0],
        )
        or "kl"
    )
    full = depth_frame(metric)
    full = full[full["model"].isin(picked)]
    df = full[full["intervention"].isin(shown)]
    if df.empty:
        st.info("No rows for this choice: pick at least one model and one intervention.")
        return
    label, unit, note = METRICS[metric]
    predict.show(
        "delete_hurts", charts.depth_lines(df, f"{label} ({unit})", stroke_dash="intervention"), df
    )
    ui.sample_caption(df, "paragraphs", BLOCK_NOTE)
    st.markdown(f"**What to look for.** {note}")
    ui.findings(finding(metric, full))
    st.markdown("**First, middle and last blocks side by side:**")
    st.dataframe(edge_summary(df).round(3), hide_index=True, width="stretch")
    ui.download(df, f"delete_swap_{metric}")
    notebooks.button(df, f"delete_swap_{metric}", METHODS[0], label, dash="intervention")
    ui.provenance(list(METHODS), picked, PROVENANCE)


def live_panel() -> None:
    """Live: delete or swap one layer on the student's prompt, top-10 before and after."""
    st.subheader("Your prompt, live: break one layer yourself")
    ui.badge("live")
    cfg = live.config()
    model = live.model_picker(key="ds_model")
    prompt = panel.prompt_box(
        "Prompt",
        value="The Eiffel Tower is located in the city of",
        key="ds_prompt",
    )
    n = n_blocks(model)
    if int(st.session_state.get("ds_layer", 0)) > n - 1:  # e.g. a URL made for a deeper model
        st.session_state["ds_layer"] = n - 1
    c1, c2 = st.columns([2, 1])
    layer = c1.slider(
        "Block",
        0,
        n - 1,
        value=0,
        key="ds_layer",
        bind="query-params",
        help=f"{model} has blocks 0..{n - 1}. A swap exchanges this block and the next one.",
    )
    action = c2.selectbox("Intervention", list(ACTIONS), key="ds_action", bind="query-params")
    res = panel.run(
        "Run it",
        "ds_live",
        lambda: live_intervention(
            model, live.check_prompt(prompt), action, layer, cfg.max_live_tokens
        ),
        "Running the model twice ...",
    )
    if not res:
        return
    st.markdown(
        f"**{res['model']}, {res['action']} at block {res['layer']}** "
        f"(of 0..{res['n_layers'] - 1}), {res['n_tokens']} tokens."
    )
    if res["truncated"]:
        st.caption(f"Only the first {cfg.max_live_tokens} tokens were analysed.")
    m1, m2, m3 = st.columns(3)
    m1.metric("KL at the last position", f"{res['kl_last']:.3f} nats")
    m2.metric("mean KL over positions", f"{res['kl_mean']:.3f} nats")
    m3.metric("top-1 agreement", f"{res['top1_same']:.0%}")
    ui.before_after(res["before"], res["after"], "normal model", "after the intervention")
    st.markdown(TRY_THIS)
    ui.download(live_table(res), "delete_swap_live", key="dl-ds-live")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Delete or swap a layer",
        "How robust are language models to deleting a layer, or to swapping two adjacent "
        "layers? If a layer can go, what was it doing?",
        [
            ("Lad, Gurnee & Tegmark 2024", "https://arxiv.org/abs/2406.19384"),
            ("Lad et al.'s code", "https://github.com/vdlad/Remarkable-Robustness-of-LLMs"),
        ],
    )
    st.markdown(INTRO)
    with st.expander("Definitions"):
        st.markdown(DEFINITIONS)
    precomputed()
    live_panel()


main()
