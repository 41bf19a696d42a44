"""Lens disagreement.

Lenses are instruments: where do the logit lens and the tuned lens read a layer differently?
"""

import streamlit as st

from app import charts, data, live, notebooks, ui
from app import lens_compare_views as V
from app import live_panel as panel
from app.claims_facts_views import disagreement_finding, worse_states_finding

METHOD = V.TL
DOMAINS = {"top1_prob": (0.0, 1.0), "kl_to_final": (0.0, 10.0), "entropy": (0.0, 10.0)}
TITLES = {
    "top1_prob": "probability of the top-1 token",
    "kl_to_final": "KL to the final output (nats)",
    "entropy": "entropy of the lens (nats)",
}
#: metric: (menu label, axis title)
METRIC_LABELS = {
    "kl_to_final": ("distance to the final output (KL)", "KL(final ‖ lens) (nats)"),
    "ce_next_token": ("next-token loss", "next-token loss (nats)"),
    "entropy": ("uncertainty (entropy)", "lens entropy (nats)"),
}


def average() -> None:
    """Show (a) precomputed held-out KL to the final output, both lenses."""
    st.subheader("On held-out text: how far is each lens from the final output?")
    ui.badge("precomputed")
    models = data.models_for(METHOD)
    if not models:
        ui.no_results(METHOD)
        return
    metric = (
        st.segmented_control(
            "Metric",
            ["kl_to_final", "ce_next_token", "entropy"],
            default="kl_to_final",
            format_func=lambda m: METRIC_LABELS[m][0],
            key="tl_metric",
            bind="query-params",
        )
        or "kl_to_final"
    )
    df = V.tuned_eval(models, metric)
    y_title = METRIC_LABELS[metric][1]
    st.altair_chart(charts.depth_lines(df, y_title, stroke_dash="lens"), width="stretch")
    ui.sample_caption(df, "held-out paragraphs")
    st.markdown(V.EVAL_NOTE)
    ui.findings(worse_states_finding(V.tuned_eval(models, "kl_to_final")))
    ui.download(df, f"tuned_lens_{metric}", key="dl-eval")
    notebooks.button(df, f"tuned_lens_{metric}", METHOD, y_title, dash="lens")
    ui.provenance(METHOD, models, V.TUNED_PROVENANCE)


def live_panel() -> None:
    """Show (b) live: both lenses on the student prompt, disagreements framed."""
    st.subheader("Your prompt through both lenses")
    ui.badge("live")
    cfg = live.config()
    model = live.model_picker(key="dis_model")
    prompt = panel.prompt_box(
        "Prompt",
        value="The Eiffel Tower is located in the city of",
        key="dis_prompt",
    )
    value = st.selectbox(
        "Colour", list(DOMAINS), format_func=TITLES.get, key="dis_value", bind="query-params"
    )
    res = panel.run(
        "Run both lenses",
        "dis_result",
        lambda: {
            "model": model,
            **V.live_compare(model, live.check_prompt(prompt), min(cfg.max_live_tokens, 48)),
        },
        "Running the model and both lenses ...",
    )
    if res is None:
        return
    if "missing" in res:
        st.info(res["missing"])
        return
    df = res["frame"]
    if df["truncated"].any():
        st.caption("Only the first 48 tokens were analysed.")
    by_layer = V.disagreement_by_layer(df)
    st.markdown(
        f"**{res['model']}**: cells framed in orange are where the two lenses pick different "
        "top-1 tokens."
    )
    for lens in ("logit", "tuned"):  # one above the other: a cell per token needs the width
        one = df[df["lens"] == lens]
        st.altair_chart(
            charts.token_heatmap(
                one,
                value,
                TITLES[value],
                DOMAINS[value],
                reverse=value != "top1_prob",
                title=V.LENS_LABELS[lens],
                outline="disagree",
                outline_label="the two lenses pick different top-1 tokens",
            ),
            width="stretch",
        )
    st.altair_chart(
        charts.layer_bars(
            by_layer,
            "share_disagree",
            "positions where the lenses disagree (fraction)",
            "Where the two lenses disagree, layer by layer",
        ),
        width="stretch",
    )
    ui.findings(disagreement_finding(by_layer), "What your prompt shows")
    st.markdown("Neither lens is 'the truth': each is a way of reading the same residual stream.")
    with st.expander("The tuned lens used here"):
        st.code(V.lens_meta_json(res["lens"]), language="json")
    ui.download(df, "lens_disagreement_live", key="dl-dis")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Lens disagreement",
        "Lenses are instruments: where do the logit lens and the tuned lens read the same layer "
        "differently?",
        [
            ("Belrose et al. 2023", "https://arxiv.org/abs/2303.08112"),
            ("nostalgebraist 2020", "https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru"),
            ("Gupta et al. 2025", "https://arxiv.org/abs/2510.18871"),
        ],
    )
    st.markdown(V.INTRO)
    average()
    live_panel()


main()
