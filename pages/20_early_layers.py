"""What are the early layers doing?

Detokenization: attention locality, the attention/MLP norm ratio and input repetition by depth.
"""  # noqa: D400

import streamlit as st

from app import charts, live, notebooks, ui
from app import live_panel as panel
from app.claims_views import lens_finding, locality_finding, ratio_finding
from app.stages_views import (
    EARLY_METHOD,
    EARLY_PROVENANCE,
    LOCALITY,
    curve,
    live_pattern_frame,
    models_with,
)


def section(key: str, y_title: str, notice: str, method: str, name: str, finding) -> None:
    """One precomputed depth chart, every model overlaid, with what its data show."""
    df = curve(key)
    if df.empty:
        ui.no_results(method)
        return
    picked = st.session_state.get("models") or sorted(df["model"].unique())
    df = df[df["model"].isin(picked)]
    st.altair_chart(charts.depth_lines(df, y_title), width="stretch")
    ui.sample_caption(df, "paragraphs")
    st.markdown(f"**What to look for.** {notice}")
    ui.findings(finding(df))
    ui.download(df, name)
    notebooks.button(df, name, method, y_title)


def precomputed() -> None:
    """Show the three signatures of the detokenization stage."""
    ui.badge("precomputed")
    models = models_with("attention_locality", "component_norms", "logit_lens")
    if models:
        st.multiselect("Models", models, default=models, key="models", bind="query-params")

    st.subheader("1. Do early heads look at the last few tokens?")
    st.session_state.setdefault("locality", "prev5")
    pick = st.segmented_control(
        "Statistic", list(LOCALITY), key="locality", bind="query-params", format_func=LOCALITY.get
    )
    key = pick or "prev5"
    section(
        key,
        {"prev5": "attention on previous 5 tokens (fraction)"}.get(key, "mean weight (prob)"),
        "Lad et al. find locality highest in the first blocks: early heads merge a token with "
        "its neighbours (multi-token words, short phrases) before later heads look further "
        "back. The mean weight is about the mass divided by 5. Gemma-3 alternates five "
        "sliding-window layers with one global-attention layer: architecture can show in the "
        "signature.",
        "attention_locality",
        f"attention_locality_{key}",
        locality_finding,
    )

    st.subheader("2. Is the early work done by attention or by MLPs?")
    section(
        "attn_mlp",
        "‖attention output‖ / ‖MLP output‖ (ratio of means)",
        "A ratio above 1 means attention writes more into the residual stream than the MLP. "
        "Lad et al. report attention-heavy early computation and MLP-heavy late computation; "
        "check whether both models agree, and where the ratio crosses 1.",
        "component_norms",
        "component_norms_ratio",
        ratio_finding,
    )

    st.subheader("3. Does the residual stream still look like the input token?")
    section(
        "repeat_input",
        "lens top-1 = input token (fraction of positions)",
        "Read through the logit lens, a state that predicts the token it sits on is still "
        "mostly the token embedding; when the rate drops, context has been mixed in.",
        "logit_lens",
        "logit_lens_top1_is_input",
        lambda df: lens_finding("top1_is_input", df),
    )
    ui.provenance(["attention_locality", "component_norms"], None, EARLY_PROVENANCE)


def live_panel() -> None:
    """Show the attention pattern of one layer and head for the student's prompt."""
    st.subheader("Your prompt: where does one head look?")
    ui.badge("live")
    cfg = live.config()
    model = live.model_picker()
    prompt = panel.prompt_box(
        "Prompt",
        value="The Eiffel Tower is located in the city of Paris, which is the capital of France.",
        key="early_prompt",
    )
    c1, c2 = st.columns(2)
    layer = c1.number_input("Layer (block, 0 = first)", 0, key="early_layer", bind="query-params")
    head = c2.number_input("Head", 0, key="early_head", bind="query-params")
    res = panel.run(
        "Show the attention pattern",
        "early_live",
        lambda: live_pattern_frame(
            model, live.check_prompt(prompt), int(layer), cfg.max_live_tokens
        ),
    )
    if res is None:
        return
    heads = res["heads"]
    if int(head) >= len(heads):
        st.warning(f"This layer has heads 0..{len(heads) - 1}; pick one of them.")
        return
    if res["truncated"]:
        st.caption(f"Only the first {cfg.max_live_tokens} tokens were analysed.")
    df = res["frame"][res["frame"]["head"] == int(head)]
    st.altair_chart(
        charts.pattern_chart(df, res["order"], f"Head {int(head)}: who attends to whom"),
        width="content",
    )
    st.caption("Orange outlines: the previous-five band (keys 1..5 positions before the query).")
    if len(heads.columns) > 1:
        st.dataframe(heads, hide_index=True)
    ui.download(df, "attention_pattern_live", key="dl-early-live")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "What are the early layers doing?",
        "Lad et al. call the first stage detokenization: early layers integrate local context, "
        "turning tokens into words. Three measurements test that on every model.",
        [
            ("Lad, Gurnee & Tegmark 2024", "https://arxiv.org/abs/2406.19384"),
            ("nostalgebraist 2020", "https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru"),
        ],
    )
    st.markdown(EARLY_METHOD)
    precomputed()
    live_panel()


main()
