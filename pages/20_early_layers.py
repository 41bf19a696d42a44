"""What are the early layers doing?

Detokenization: attention locality, the attention/MLP norm ratio and input repetition by depth.
"""  # noqa: D400

import streamlit as st

from app import charts, data, live, ui
from app.stages_views import curve, live_pattern_frame, pattern_chart

LOCALITY = {
    "prev5": "fraction of attention on the previous 5 tokens (ours, the paper's wording)",
    "prev5_mean": "mean weight on one of the previous 5 tokens (LAD's code)",
}


def section(key: str, y_title: str, notice: str, method: str, name: str) -> None:
    """One precomputed depth chart, every model overlaid."""
    df = curve(key)
    if df.empty:
        ui.no_results(method)
        return
    picked = st.session_state.get("models") or sorted(df["model"].unique())
    df = df[df["model"].isin(picked)]
    st.altair_chart(charts.depth_lines(df, y_title), width="stretch")
    st.markdown(f"**What to notice.** {notice}")
    ui.download(df, name)


def precomputed() -> None:
    """Show the three signatures of the detokenization stage."""
    ui.badge("precomputed")
    models = sorted(
        set(data.models_for("attention_locality"))
        | set(data.models_for("component_norms"))
        | set(data.models_for("logit_lens"))
    )
    if models:
        st.multiselect("Models", models, default=models, key="models", bind="query-params")

    st.subheader("1. Do early heads look at the last few tokens?")
    key = (
        st.segmented_control(
            "Statistic",
            list(LOCALITY),
            default="prev5",
            key="locality",
            bind="query-params",
            format_func=lambda k: LOCALITY[k],
        )
        or "prev5"
    )
    section(
        key,
        "attention on previous 5 tokens (fraction)"
        if key == "prev5"
        else "mean attention weight (prob)",
        "Locality is highest in the first blocks and falls with depth: early heads merge a "
        "token with its neighbours (multi-token words, short phrases) before later heads "
        "look further back. The mean weight is about the mass divided by 5. Gemma-3 "
        "alternates five sliding-window layers with one global-attention layer (blocks 5, "
        "11, 17): look for dips in locality there -- architecture shows in the signature.",
        "attention_locality",
        f"attention_locality_{key}",
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
    )

    st.subheader("3. Does the residual stream still look like the input token?")
    section(
        "repeat_input",
        "lens top-1 = input token (fraction of positions)",
        "Read through the logit lens, the first states predict the token they sit on: the "
        "stream is still mostly the token embedding. The rate collapses within the first "
        "blocks, when context starts to be mixed in.",
        "logit_lens",
        "logit_lens_top1_is_input",
    )
    ui.provenance(
        "attention_locality",
        None,
        "WikiText-2 paragraphs, first 128 tokens. Locality: per layer, LAD's mean of the "
        "sub-diagonals at offsets 1..5 of every head (mean weight), and our mass on offsets 1..5 "
        "averaged over heads and queries q ≥ 6 (fraction). Norms: L2 norm of what each sublayer "
        "adds to the residual stream (hooks `hook_attn_out`, `hook_mlp_out`), positions ≥ 1; "
        "ratio of means. Lens: recomputed final norm. Mean and 95 % interval over documents; "
        "the model's own weights (no TransformerLens folding).",
    )


def live_panel() -> None:
    """Show the attention pattern of one layer and head for the student's prompt."""
    st.subheader("Your prompt: where does one head look?")
    ui.badge("live")
    cfg = live.config()
    model = live.model_picker()
    prompt = st.text_area(
        "Prompt",
        value="The Eiffel Tower is located in the city of Paris, which is the capital of France.",
        key="early_prompt",
        max_chars=cfg.max_prompt_chars,
        bind="query-params",
    )
    c1, c2 = st.columns(2)
    layer = c1.number_input(
        "Layer (block, 0 = first)",
        min_value=0,
        value=0,
        step=1,
        key="early_layer",
        bind="query-params",
    )
    head = c2.number_input(
        "Head", min_value=0, value=0, step=1, key="early_head", bind="query-params"
    )
    if st.button("Show the attention pattern", type="primary"):
        try:
            text = live.check_prompt(prompt)
            with st.spinner("Running the model ..."):
                st.session_state["early_live"] = live_pattern_frame(
                    model, text, int(layer), cfg.max_live_tokens
                )
        except (live.PromptError, ValueError) as err:
            st.warning(str(err))
            return
    res = st.session_state.get("early_live")
    if res is None:
        return
    heads = res["heads"]
    if int(head) >= len(heads):
        st.warning(f"This layer has heads 0..{len(heads) - 1}; pick one of them.")
        return
    if res["truncated"]:
        st.caption(f"Only the first {cfg.max_live_tokens} tokens were analysed.")
    df = res["frame"][res["frame"]["head"] == int(head)]
    st.altair_chart(pattern_chart(df, res["order"]), width="content")
    st.caption("Orange outlines: the previous-five band (keys 1..5 positions before the query).")
    if "prev5_mass_fraction" in heads.columns:
        st.dataframe(
            heads.rename(
                columns={
                    "prev5_mass_fraction": "mass on previous 5",
                    "prev5_mean_weight": "mean weight, offsets 1..5",
                }
            ),
            hide_index=True,
        )
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
    st.markdown(
        "**Method.** For every layer we measure (1) how much attention goes to the five tokens "
        "just before each query, (2) how large the attention and MLP outputs are, and (3) how "
        "often the logit lens's best guess is the input token itself. Curves are plotted against "
        "relative depth so models of different depth line up."
    )
    precomputed()
    live_panel()


main()
