"""Delete or swap a layer.

How robust is a language model to losing one of its layers, or to running two of them out of order?
"""

import streamlit as st

from app import charts, live, ui
from app.robustness_views import (
    ACTIONS,
    INTERVENTIONS,
    METHODS,
    METRICS,
    depth_frame,
    edge_summary,
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
    df = depth_frame(metric)
    df = df[df["model"].isin(picked) & df["intervention"].isin(shown)]
    if df.empty:
        st.info("No rows for this choice: pick at least one model and one intervention.")
        return
    label, unit, note = METRICS[metric]
    st.altair_chart(
        charts.depth_lines(df, f"{label} ({unit})", stroke_dash="intervention"), width="stretch"
    )
    st.markdown(f"**What to notice.** {note}")
    st.caption(
        "Block l sits at relative depth l / (L − 1); the swap of blocks l and l+1 is drawn "
        "at block l, next to the deletion of block l."
    )
    st.markdown("**The edges stand out**: the first and last values against the middle ones.")
    st.dataframe(
        edge_summary(df),
        hide_index=True,
        width="stretch",
        column_config={
            c: st.column_config.NumberColumn(format="%.3f")
            for c in ("first", "middle (median)", "last")
        },
    )
    ui.download(df, f"delete_swap_{metric}")
    ui.provenance(
        METHODS[0],
        picked,
        "Each WikiText-2 paragraph is cut to its first 64 tokens (ours). For every block l the "
        "model is run with that block deleted (its attention and MLP outputs zeroed, so the "
        "residual stream skips it) or with blocks l and l+1 run in swapped order, and compared "
        "with the normal run at positions 1..T−1: KL in nats, entropy in bits (as Lad et al.), "
        "next-token loss in nats at positions 1..T−2. Mean and 95 % interval (±1.96 SEM) over "
        "paragraphs. Deletion runs here; the swap runs below.",
    )
    ui.provenance(METHODS[1], picked, "Swap runs (`layer_swap`).")


def live_panel() -> None:
    """Live: delete or swap one layer on the student's prompt, top-10 before and after."""
    st.subheader("Your prompt, live: break one layer yourself")
    ui.badge("live")
    cfg = live.config()
    model = live.model_picker(key="ds_model")
    prompt = st.text_area(
        "Prompt",
        value="The Eiffel Tower is located in the city of",
        key="ds_prompt",
        max_chars=cfg.max_prompt_chars,
        bind="query-params",
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
    if st.button("Run it", type="primary", key="ds_run"):
        try:
            text = live.check_prompt(prompt)
            with st.spinner("Running the model twice ..."):
                st.session_state["ds_live"] = live_intervention(
                    model, text, action, layer, cfg.max_live_tokens
                )
        except (live.PromptError, ValueError) as err:
            st.warning(str(err))
            return
    res = st.session_state.get("ds_live")
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
    prob = st.column_config.ProgressColumn(
        "probability", format="%.3f", min_value=0.0, max_value=1.0
    )
    b1, b2 = st.columns(2)
    b1.markdown("Next token, **normal model**")
    b1.dataframe(res["before"], hide_index=True, width="stretch", column_config={"prob": prob})
    b2.markdown("Next token, **after the intervention**")
    b2.dataframe(res["after"], hide_index=True, width="stretch", column_config={"prob": prob})
    st.markdown(
        "**Try this.** Delete block 0, then a middle block, then the last one; then swap "
        "the same blocks. Which breaks the prediction, and which leaves it almost intact?"
    )
    ui.download(live_table(res), "delete_swap_live", key="dl-ds-live")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Delete or swap a layer",
        "How robust are language models to deleting a layer, or to swapping two adjacent "
        "layers? If a layer can go, what was it doing?",
        [
            ("Lad, Gurnee & Tegmark 2024", "https://arxiv.org/abs/2406.19384"),
            ("LAD code", "https://github.com/vdlad/Remarkable-Robustness-of-LLMs"),
        ],
    )
    st.markdown(
        "Lad et al. delete one block at a time (the residual stream skips it) or run two "
        "neighbouring blocks in swapped order, and measure how far the output distribution moves. "
        "Most middle layers turn out to be dispensable, the first and last are not -- evidence "
        "for distinct *stages* of inference."
    )
    with st.expander("Definitions"):
        st.markdown(
            "- **Delete block l**: its attention and MLP write nothing; *attention only* / *MLP "
            "only* zero just one of them.\n"
            "- **Swap l, l+1**: run block l+1 before block l (each block keeps its own weights and "
            "attention type).\n"
            "- **KL(normal ‖ intervened)**: nats of surprise the intervened model has about the "
            "normal model's distribution, averaged over positions (position 0 excluded).\n"
            "- **Top-1 agreement**: positions where both pick the same next token.\n"
            "- **Entropy change** in bits and **loss change** in nats: intervened minus normal."
        )
    precomputed()
    live_panel()


main()
