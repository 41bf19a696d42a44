"""Sharpening at the end.

Prediction and suppression neurons, the MLP output norm and the lens entropy in the last layers.
"""

import streamlit as st

from app import charts, data, ui
from app.stages_views import curve, curves, neuron_scatter, neuron_scatter_frame

NEURON_NOTE = (
    "Weights only (no data): each MLP neuron's output direction is compared (cosine) with every "
    "token's unembedding; over the vocabulary, kurtosis > 10 (non-excess, Gaussian = 3) with "
    "positive skew marks a prediction neuron (it promotes a few tokens), negative skew a "
    "suppression neuron. Weight preprocessing equivalent to TransformerLens `fold_ln`, "
    "`center_writing_weights`, `center_unembed` is applied to the matrices directly (final-norm "
    "scale folded into W_U; W_U centred over the vocabulary; LayerNorm models also centred over "
    "d_model). The bridge runs the checkpoint unfolded, so this is a re-derivation, not "
    "TransformerLens's own folding. For Gemma the post-MLP norm's scale is folded into each "
    "neuron's direction; that norm also makes the neuron's write non-linear, which no weight "
    "statistic captures."
)


def neurons_section(picked: list[str]) -> None:
    """Prediction and suppression neuron shares per layer."""
    st.subheader("1. Where are the prediction and suppression neurons?")
    df = curves(["pct_pred", "pct_supp"])
    if df.empty:
        ui.no_results("neurons")
        return
    df = df[df["model"].isin(picked)] if picked else df
    st.altair_chart(
        charts.depth_lines(df, "neurons of the layer (percent)", stroke_dash="signature"),
        width="stretch",
    )
    st.markdown(
        "**What to notice.** Lad et al. (after Gurnee et al.) find prediction neurons appearing "
        "after mid-depth and suppression neurons dominating the very last layers: the model first "
        "proposes candidate tokens, then removes the wrong ones -- *residual sharpening*."
    )
    ui.download(df, "neurons_per_layer")
    with st.expander("One layer, every neuron: skew against kurtosis"):
        models = data.models_for("neurons")
        c1, c2 = st.columns(2)
        model = c1.selectbox("Model", models, key="nrn_model", bind="query-params")
        n_layers = (
            int(df.loc[df["model"] == model, "n_layers"].max()) if model in set(df["model"]) else 1
        )
        layer = c2.number_input(
            "Layer",
            0,
            max(n_layers - 1, 0),
            max(n_layers - 1, 0),
            key="nrn_layer",
            bind="query-params",
        )
        sc = neuron_scatter_frame(model, int(layer))
        if not sc.empty:
            st.altair_chart(neuron_scatter(sc), width="stretch")
            ui.download(sc, f"neurons_{model}_{layer}", key="dl-nrn")
    ui.provenance("neurons", picked, NEURON_NOTE)


def mlp_section(picked: list[str]) -> None:
    """Show the MLP output norm per layer."""
    st.subheader("2. Do the last MLPs write more?")
    df = curve("mlp_norm")
    if df.empty:
        ui.no_results("component_norms")
        return
    df = df[df["model"].isin(picked)] if picked else df
    st.altair_chart(
        charts.depth_lines(df, "mean ‖MLP output‖ (norm, positions ≥ 1)"), width="stretch"
    )
    st.markdown(
        "**What to notice.** The MLP output norm grows towards the end and peaks in the final "
        "blocks (Lad et al. Fig. 7): the last MLPs write large corrections into the residual "
        "stream. Norms are in each model's own units, so compare shapes, not heights."
    )
    ui.download(df, "mlp_out_norm")


def entropy_section(picked: list[str]) -> None:
    """Lens entropy in bits, both norm variants: a lesson about instruments."""
    st.subheader("3. How confident is each layer? Two instruments, two answers")
    df = curves(["entropy", "entropy_cached"])
    if df.empty:
        ui.no_results("lens_entropy")
        return
    df = df[df["model"].isin(picked)] if picked else df
    st.altair_chart(
        charts.depth_lines(df, "logit-lens entropy (bits)", stroke_dash="variant"), width="stretch"
    )
    st.markdown(
        "**What to notice -- a lesson about instruments.** Both lines read each layer through "
        "the final norm and the unembedding. The solid one (*recompute_ln*) recomputes the norm's "
        "scale on each layer's own state: the true logit lens. The dashed one "
        "(*cached_final_scale*) divides every layer by the **last** layer's scale, as "
        "TransformerLens did before 2.18 -- the version behind Lad et al.'s Fig. 8. Early "
        "residual states are much smaller than the last one, so the cached scale shrinks their "
        "logits and inflates their entropy. The two agree exactly at the last state (relative "
        "depth 1). A striking 'entropy falls late' curve can be partly the instrument: always ask "
        "which normalisation a lens used."
    )
    ui.download(df, "lens_entropy")
    ui.provenance(
        "lens_entropy",
        picked,
        "First 500 characters of each WikiText-2 paragraph; every residual state h_0..h_L read "
        "through the final norm (both variants) and the unembedding; entropy in bits with "
        "probabilities clamped at 1e-9, positions [1:-1], mean over positions, then mean and "
        "95 % interval over documents. x = i / L.",
    )


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Sharpening at the end",
        "What do the last layers do once the answer is roughly known? Lad et al. call it residual "
        "sharpening: suppression neurons and large MLP writes that make the output distribution "
        "sharper.",
        [
            ("Lad, Gurnee & Tegmark 2024", "https://arxiv.org/abs/2406.19384"),
            ("Gurnee et al. 2024, universal neurons", "https://arxiv.org/abs/2401.12181"),
        ],
    )
    st.markdown(
        "**Method.** Three signatures per layer: the share of MLP neurons whose output weights "
        "promote or suppress a few tokens (from the weights alone), the size of what the MLP "
        "writes, and the entropy of the logit lens in bits. x = relative depth, models overlaid."
    )
    ui.badge("precomputed")
    models = sorted(
        set(data.models_for("neurons"))
        | set(data.models_for("component_norms"))
        | set(data.models_for("lens_entropy"))
    )
    picked = (
        st.multiselect("Models", models, default=models, key="models", bind="query-params")
        if models
        else []
    )
    neurons_section(picked)
    mlp_section(picked)
    entropy_section(picked)


main()
