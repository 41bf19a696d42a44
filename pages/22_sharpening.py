"""Sharpening at the end.

Prediction and suppression neurons, the MLP output norm and the lens entropy in the last layers.
"""

import streamlit as st

from app import charts, data, ui
from app.claims_views import entropy_instruments_finding, neuron_finding, peak_finding
from app.stages_views import (
    ENTROPY_LESSON,
    ENTROPY_PROVENANCE,
    NEURON_NOTE,
    curve,
    curves,
    models_with,
    neuron_scatter_frame,
    offer,
)

#: Lens variants in line-style order: solid first, dashed second.
VARIANTS = {
    "recompute_ln": "recompute_ln (true lens)",
    "cached_final_scale": "cached_final_scale (TL < 2.18)",
}


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
    st.caption("From the weights alone (no text): every MLP neuron of every block is counted.")
    st.markdown(
        "**What to look for.** Lad et al. (after Gurnee et al.) find prediction neurons appearing "
        "after mid-depth and suppression neurons dominating the very last layers: the model first "
        "proposes candidate tokens, then removes the wrong ones -- *residual sharpening*."
    )
    pred, supp = (curve(k) for k in ("pct_pred", "pct_supp"))
    ui.findings(neuron_finding(pred[pred["model"].isin(picked)], supp[supp["model"].isin(picked)]))
    offer(df, "neurons_per_layer", "neurons")
    with st.expander("One layer, every neuron: skew against kurtosis"):
        models = data.models_for("neurons")
        c1, c2 = st.columns(2)
        model = c1.selectbox("Model", models, key="nrn_model", bind="query-params")
        n_layers = (
            int(df.loc[df["model"] == model, "n_layers"].max()) if model in set(df["model"]) else 1
        )
        last = max(n_layers - 1, 0)
        layer = c2.number_input("Layer", 0, last, last, key="nrn_layer", bind="query-params")
        sc = neuron_scatter_frame(model, int(layer))
        if not sc.empty:
            st.altair_chart(
                charts.neuron_scatter(sc, title=f"Every neuron of layer {int(layer)}"),
                width="stretch",
            )
            offer(sc, f"neurons_{model}_{layer}", "scatter", key="dl-nrn")
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
        charts.depth_lines(
            df,
            "mean ‖MLP output‖ (positions ≥ 1)",
            title="Size of the MLP's write, by depth",
            normalise=True,
            subtitle="Each model divided by its own largest value: compare shapes.",
        ),
        width="stretch",
    )
    ui.sample_caption(df, "paragraphs")
    st.markdown(
        "**What to look for.** Lad et al. (Fig. 7) find the MLP output norm growing towards the "
        "end and peaking in the final blocks: the last MLPs write large corrections."
    )
    ui.findings(peak_finding(df, "the MLP output norm"))
    offer(df, "mlp_out_norm", "mlp_norm")


def entropy_section(picked: list[str]) -> None:
    """Lens entropy in bits, both norm variants: a lesson about instruments."""
    st.subheader("3. How confident is each layer? Two instruments, two answers")
    df = curves(["entropy", "entropy_cached"])
    if df.empty:
        ui.no_results("lens_entropy")
        return
    df = df[df["model"].isin(picked)] if picked else df
    st.altair_chart(
        charts.depth_lines(
            df.assign(variant=df["variant"].map(VARIANTS).fillna(df["variant"])),
            "logit-lens entropy (bits)",
            stroke_dash="variant",
            dash_order=list(VARIANTS.values()),
        ),
        width="stretch",
    )
    ui.sample_caption(df, "paragraphs")
    st.markdown(ENTROPY_LESSON)
    ui.findings(entropy_instruments_finding(df))
    offer(df, "lens_entropy", "entropy")
    ui.provenance("lens_entropy", picked, ENTROPY_PROVENANCE)


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
    models = models_with("neurons", "component_norms", "lens_entropy")
    picked = (
        st.multiselect("Models", models, default=models, key="models", bind="query-params")
        if models
        else []
    )
    neurons_section(picked)
    mlp_section(picked)
    entropy_section(picked)


main()
