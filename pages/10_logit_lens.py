"""Logit lens.

When does the model know the answer? Read each layer's residual stream as a prediction.
"""

import pandas as pd
import streamlit as st

from app import charts, data, live, predict, ui
from app.lens_views import METRICS, curve_frame, heatmap_frame, live_lens_frame, topk_cell

METHOD = "logit_lens"


def curves() -> None:
    """(a) Precomputed curves over relative depth, all models overlaid."""
    st.subheader("Across models: how far is each layer from the final answer?")
    ui.badge("precomputed")
    models = data.models_for(METHOD)
    if not models:
        ui.no_results(METHOD)
        return
    picked = st.multiselect("Models", models, default=models, key="models", bind="query-params")
    metric = st.selectbox(
        "Metric",
        list(METRICS),
        key="lens_metric",
        bind="query-params",
        format_func=lambda m: METRICS[m][0],
    )
    df = curve_frame(metric, picked)
    label, unit, note = METRICS[metric]
    scale = "symlog" if unit == "nats" else "linear"  # nats span 0 to hundreds
    title = f"{label} ({unit}{', symlog axis' if scale == 'symlog' else ''})"
    predict.show("lens_answer", charts.depth_lines(df, title, y_scale=scale), df)
    st.markdown(f"**What to notice.** {note}")
    ui.download(df, f"logit_lens_{metric}")
    ui.provenance(
        METHOD,
        picked,
        "Each WikiText-2 paragraph is cut to its first tokens; per layer, metrics are averaged "
        "over "
        "positions 1..T-1 (position 0 excluded), then mean and 95 % interval (±1.96 SEM) over "
        "paragraphs. The final norm is recomputed on every layer's state (true logit lens).",
    )


def example_heatmap() -> None:
    """(b) The team's example prompts: layer x position heatmap with the top token."""
    st.subheader("One prompt, every layer: what does the lens predict?")
    ui.badge("precomputed")
    models = data.models_for(METHOD, "lens_topk")
    if not models:
        return
    c1, c2, c3 = st.columns([1, 2, 1])
    model = c1.selectbox("Model", models, key="hm_model", bind="query-params")
    prompts = data.query(
        "SELECT prompt_id, text FROM prompts WHERE model = ? AND dataset = 'examples' "
        "ORDER BY prompt_id",
        [model],
    )
    if prompts.empty:
        st.info("No example prompts for this model.")
        return
    texts = dict(zip(prompts["prompt_id"], prompts["text"]))
    pid = c2.selectbox(
        "Example prompt", list(texts), format_func=texts.get, key="prompt", bind="query-params"
    )
    value = c3.selectbox(
        "Colour", ["top1_prob", "kl_to_final", "entropy"], key="hm_value", bind="query-params"
    )
    df = heatmap_frame(model, pid, value)
    st.altair_chart(heatmap_chart(df, value), width="stretch")
    st.markdown(
        "**What to notice.** Read a column bottom-up: early layers often write the *input* token "
        "itself (the lens 'repeats the input'), middle layers write related words, and the final "
        "answer appears in the top rows, often well before the last layer."
    )
    ui.download(df, f"logit_lens_{model}_{pid}", key="dl-heatmap")
    inspect_cell(df, model, pid)


def inspect_cell(df: pd.DataFrame, model: str, pid: str) -> None:
    """Pick a layer and a position: the lens's top-10 tokens there."""
    st.markdown("**Inspect one cell.** Pick a layer and a position to see the lens's top-10.")
    n_states = int(df["layer"].max())
    positions = df.drop_duplicates("position").sort_values("position")
    labels = dict(zip(positions["position"], positions["input_token"]))
    if st.session_state.get("layer", 0) > n_states:  # a URL from a deeper model
        st.session_state["layer"] = n_states
    if st.session_state.get("position") not in labels:
        st.session_state.pop("position", None)
    c1, c2 = st.columns(2)
    layer = c1.slider(
        "Layer (residual state)", 0, n_states, n_states // 2, key="layer", bind="query-params"
    )
    pos = c2.selectbox(
        "Position",
        list(labels),
        index=len(labels) - 1,
        key="position",
        format_func=lambda p: f"{p}: {labels[p]!r}",
        bind="query-params",
    )
    top = topk_cell(model, pid, layer, pos)
    st.dataframe(
        top,
        hide_index=True,
        width="content",
        column_config={"prob": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0)},
    )


def heatmap_chart(df: pd.DataFrame, value: str):
    """The heatmap with a fixed colour scale per metric, so prompts compare."""
    domains = {"top1_prob": (0.0, 1.0), "kl_to_final": (0.0, 10.0), "entropy": (0.0, 10.0)}
    title = {"top1_prob": "top-1 prob", "kl_to_final": "KL (nats)", "entropy": "entropy (nats)"}
    return charts.token_heatmap(
        df, value, title[value], domains[value], reverse=value != "top1_prob"
    )


def live_panel() -> None:
    """(c) Live: the student's own prompt through the same function."""
    st.subheader("Your prompt, live")
    ui.badge("live")
    cfg = live.config()
    model = live.model_picker()
    prompt = st.text_area(
        "Prompt",
        value="The Eiffel Tower is located in the city of",
        key="live_prompt",
        max_chars=cfg.max_prompt_chars,
        bind="query-params",
    )
    value = st.selectbox("Colour", ["top1_prob", "kl_to_final", "entropy"], key="live_value")
    submitted = st.button("Run the lens", type="primary")
    if not submitted and "live_lens_df" not in st.session_state:
        return
    if submitted:
        try:
            text = live.check_prompt(prompt)
            with st.spinner("Running the model ..."):
                st.session_state["live_lens_df"] = live_lens_frame(model, text, cfg.max_live_tokens)
        except live.PromptError as err:
            st.warning(str(err))
            return
    df = st.session_state["live_lens_df"]
    if df["truncated"].any():
        st.caption(f"Only the first {cfg.max_live_tokens} tokens were analysed.")
    st.altair_chart(heatmap_chart(df, value), width="stretch")
    ui.download(df, "logit_lens_live", key="dl-live")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Logit lens: when does the model know the answer?",
        "If the model stopped at layer i, what would it predict? Push each layer's residual "
        "stream through the final norm and the unembedding, and compare with the real output.",
        [
            ("nostalgebraist 2020", "https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru"),
            ("Belrose et al. 2023", "https://arxiv.org/abs/2303.08112"),
            ("Lad et al. 2024", "https://arxiv.org/abs/2406.19384"),
        ],
    )
    with st.expander("Definitions"):
        st.markdown(
            "- **KL(final ‖ lens)**: how many nats of surprise the lens's distribution has about "
            "the model's real output; 0 at the last layer.\n"
            "- **Cross-entropy to final** = entropy of the final output + KL.\n"
            "- **Entropy** of the lens distribution (nats): low means confident.\n"
            "- **Top-1 agreement**: the lens's most likely token is the model's final choice.\n"
            "- **Repeats the input**: the lens's most likely token is the token at that position.\n"
            "- **Relative depth**: state i of L blocks sits at i / L (0 = embeddings)."
        )
    curves()
    example_heatmap()
    live_panel()


main()
