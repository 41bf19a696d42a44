"""Lens disagreement.

Lenses are instruments: where do the logit lens and the tuned lens read a layer differently?
"""

import json

import streamlit as st

from app import charts, data, live, ui
from app import lens_compare_views as V
from app import live_panel as panel

METHOD = V.TL
DOMAINS = {"top1_prob": (0.0, 1.0), "kl_to_final": (0.0, 10.0), "entropy": (0.0, 10.0)}
TITLES = {
    "top1_prob": "probability of the top-1 token",
    "kl_to_final": "KL to the final output (nats)",
    "entropy": "entropy of the lens (nats)",
}
METRIC_LABELS = {
    "kl_to_final": "distance to the final output (KL)",
    "ce_next_token": "next-token loss",
    "entropy": "uncertainty (entropy)",
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
            format_func=METRIC_LABELS.get,
            key="tl_metric",
            bind="query-params",
        )
        or "kl_to_final"
    )
    df = V.tuned_eval(models, metric)
    titles = {
        "kl_to_final": "KL(final ‖ lens) (nats)",
        "ce_next_token": "next-token loss (nats)",
        "entropy": "lens entropy (nats)",
    }
    st.altair_chart(charts.depth_lines(df, titles[metric], stroke_dash="lens"), width="stretch")
    st.markdown(
        "**What to notice.** The tuned lens is trained to match the final output, so on held-out "
        "text its KL should be lower, most of all in early layers, where the logit lens reads the "
        "residual stream through an unembedding those layers never write for; both reach 0 at the "
        "last layer. Our lenses were trained on a tiny CPU budget (see below): SmolLM2's (~1,000 "
        "tokens) beats the logit lens at every layer, Gemma's (128 tokens) does not at some middle "
        "layers -- an undertrained instrument can be worse than no training."
    )
    ui.download(df, f"tuned_lens_{metric}", key="dl-eval")
    ui.provenance(
        METHOD,
        models,
        "Translators trained with SGD-Nesterov (TL defaults) on WikiText-2 paragraphs against the "
        "model's own final distribution; evaluated on other paragraphs never used for training "
        "(positions 1..T-1). The stored lens (float16, low rank) is the one evaluated. "
        "`config_json` gives the budget: `cpu` (ours) or `paper` (TL: 250 × 2^18 tokens).",
    )


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
    agree_from = by_layer.loc[by_layer["share_disagree"] > 0, "layer"].max()
    st.markdown(
        f"**{res['model']}**: cells framed in orange are where the two lenses pick different "
        "top-1 tokens. "
        + (
            f"From layer {int(agree_from) + 1} on they agree at every position."
            if by_layer["share_disagree"].gt(0).any()
            else "They agree everywhere."
        )
    )
    left, right = st.columns(2)
    for col, lens in ((left, "logit"), (right, "tuned")):
        col.markdown(f"**{V.LENS_LABELS[lens]}**")
        one = df[df["lens"] == lens]
        col.altair_chart(
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
    st.markdown(
        "**What to notice.** Disagreement is concentrated in the early layers, where the logit "
        "lens often repeats the input token or a frequent word while the tuned lens already "
        "leans towards the final prediction. Neither is 'the truth': each is a way of reading the "
        "same residual stream."
    )
    with st.expander("The tuned lens used here"):
        st.code(
            json.dumps(
                {k: v for k, v in res["lens"].items() if k != "energy_kept_per_layer"}, indent=1
            )[:3000],
            language="json",
        )
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
    st.markdown(
        "The **logit lens** pushes each layer's residual stream straight through the final norm "
        "and the unembedding. The **tuned lens** first applies a small affine translator trained "
        "for that layer to match the model's final output. Untrained, the two are identical."
    )
    average()
    live_panel()


main()
