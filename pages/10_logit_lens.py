"""Logit lens.

When does the model know the answer? Read each layer's residual stream as a prediction.
"""

import streamlit as st

from app import charts, data, live, notebooks, predict, ui
from app import live_panel as panel
from app.claims_views import lens_finding
from app.lens_views import (
    DEFINITIONS,
    HEAT,
    HEAT_LABELS,
    METRICS,
    PROVENANCE,
    curve_frame,
    example_prompts,
    heatmap_chart,
    heatmap_frame,
    heatmap_notebook,
    inspect_cell,
    live_lens_frame,
)

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
    predict.show(
        "lens_answer",
        charts.depth_lines(
            df, title, title=f"{label[:1].upper()}{label[1:]}, layer by layer", y_scale=scale
        ),
        df,
    )
    ui.sample_caption(df, "paragraphs")
    st.markdown(f"**What to look for.** {note}")
    ui.findings(lens_finding(metric, df))
    ui.download(df, f"logit_lens_{metric}")
    notebooks.button(df, f"logit_lens_{metric}", METHOD, title, y_scale=scale)
    ui.provenance(METHOD, picked, PROVENANCE)


def example_heatmap() -> None:
    """(b) The team's example prompts: layer x position heatmap with the top token."""
    st.subheader("One prompt, every layer: what does the lens predict?")
    ui.badge("precomputed")
    models = data.models_for(METHOD, "lens_topk")
    if not models:
        return
    c1, c2, c3 = st.columns([1, 2, 1])
    model = c1.selectbox("Model", models, key="hm_model", bind="query-params")
    texts = example_prompts(model)
    if not texts:
        st.info("No example prompts for this model.")
        return
    pid = c2.selectbox(
        "Example prompt", list(texts), format_func=texts.get, key="prompt", bind="query-params"
    )
    value = c3.selectbox(
        "Colour", list(HEAT), format_func=HEAT_LABELS.get, key="hm_value", bind="query-params"
    )
    df = heatmap_frame(model, pid, value)
    st.altair_chart(heatmap_chart(df, value), width="stretch")
    st.markdown(
        "**What to look for.** Read a column bottom-up. Does the lens first repeat the *input* "
        "token? When do related words appear? At which layer does the final answer reach the "
        "top, and how long before the last layer?"
    )
    ui.download(df, f"logit_lens_{model}_{pid}", key="dl-heatmap")
    heatmap_notebook(df, value, f"logit_lens_{model}_{pid}")
    inspect_cell(df, model, pid)


def live_panel() -> None:
    """(c) Live: the student's own prompt through the same function."""
    st.subheader("Your prompt, live")
    ui.badge("live")
    cfg = live.config()
    model = live.model_picker()
    prompt = panel.prompt_box(
        "Prompt",
        value="The Eiffel Tower is located in the city of",
        key="live_prompt",
    )
    value = st.selectbox("Colour", list(HEAT), format_func=HEAT_LABELS.get, key="live_value")
    df = panel.run(
        "Run the lens",
        "live_lens_df",
        lambda: live_lens_frame(model, live.check_prompt(prompt), cfg.max_live_tokens),
    )
    if df is None:
        return
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
        st.markdown(DEFINITIONS)
    curves()
    example_heatmap()
    live_panel()


main()
