"""Stage map.

Every stage signature normalised and overlaid on relative depth; boundaries estimated from data.
"""

import pandas as pd
import streamlit as st

from app import charts, ui
from app.claims_views import boundary_finding
from app.stages_views import BY_KEY, STAGE_KEYS, signature_sizes, stage_map, stage_notebook

METHOD_NOTE = (
    "**How the boundaries are estimated.** (1) Each signature is min-max normalised to [0, 1] "
    "within a model (a constant curve is dropped). (2) Curves are interpolated onto the model's "
    "block grid, relative depth l / (L-1). (3) The layers are split into K contiguous segments "
    "that minimise the total squared deviation of every curve from its segment's mean "
    "(least-squares piecewise-constant segmentation, solved exactly by dynamic programming). "
    "(4) A boundary sits halfway between the last layer of one segment and the first of the next. "
    "Nothing in the estimator knows the paper's four stages: if its boundaries land at similar "
    "relative depths in every model, the stages are a shared property of the models; if they "
    "don't, the hypothesis is in doubt for these models. The estimator is tested on synthetic "
    "step signals (exact recovery, with and without noise). Caveats: few layers and few "
    "documents (see the counts above); normalisation gives every signature equal weight; the "
    "segmentation always returns K segments, even where the data has no clear steps."
)


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Stage map",
        "Do the four stages of inference -- detokenization, feature engineering, prediction "
        "ensembling, residual sharpening -- show up at the same relative depth in every model?",
        [("Lad, Gurnee & Tegmark 2024", "https://arxiv.org/abs/2406.19384")],
    )
    st.markdown(
        "**Method.** Every per-layer signature from the other pages (attention locality, "
        "attention/MLP ratio, MLP norm, input repetition, lens KL and entropy, prediction and "
        "suppression neurons, deletion KL) is rescaled to [0, 1] within each model and drawn on "
        "one axis. Stage boundaries (dashed black) are then estimated from the stacked curves by "
        "change-point segmentation -- not taken from the paper."
    )
    ui.badge("precomputed")
    avail = st.multiselect(
        "Signatures",
        STAGE_KEYS,
        default=STAGE_KEYS,
        key="sigs",
        bind="query-params",
        format_func=lambda k: BY_KEY[k].label,
    )
    c1, c2 = st.columns(2)
    k = c1.slider("Number of stages K", 2, 6, 4, key="k_stages", bind="query-params")
    min_size = c2.slider(
        "Fewest layers per stage",
        1,
        4,
        1,
        key="min_stage",
        bind="query-params",
        help="1 lets one outlying layer (often the first or last) be a stage.",
    )
    if not avail:
        st.info("Pick at least one signature.")
        return
    mat, bounds = stage_map(list(avail), int(k), int(min_size))
    if mat.empty:
        ui.no_results("attention_locality")
        return
    models = sorted(mat["model"].unique())
    for model in models:
        st.altair_chart(charts.stage_chart(mat, bounds, model), width="stretch")
        stage_notebook(mat, bounds, model)
    if not bounds.empty:
        st.markdown("**Estimated boundaries (relative depth) against the paper's bands**")
        table = bounds.pivot_table(index="model", columns="boundary", values="rel_depth")
        table.columns = [f"boundary {c}" for c in table.columns]
        paper = pd.DataFrame(
            [charts.STAGES["start"].tolist()[1:]],
            index=["Lad et al. (hypothesis)"],
            columns=[f"boundary {c}" for c in range(1, 4)],
        )
        st.dataframe(pd.concat([table, paper]) if k == 4 else table, width="stretch")
    n_layers = (mat.groupby("model")["layer"].max() + 1).to_dict()
    ui.findings(boundary_finding(bounds, n_layers))
    st.caption(signature_sizes(list(avail)))
    st.markdown(
        "**What to look for.** Which boundaries do all models share? Does the first fall early, "
        "where locality, input repetition and the attention/MLP ratio drop together (the end of "
        "detokenization)? Is the last near the end, where the MLP norm, suppression neurons and "
        "entropy change (sharpening)? Compare the middle one with the paper's 0.5. With one "
        "layer allowed per stage the estimator can spend boundaries on the first and last "
        "blocks; raise the fewest layers per stage to see the coarser split."
    )
    st.markdown(METHOD_NOTE)
    ui.download(mat, "stage_map_signatures")
    if not bounds.empty:
        ui.download(bounds, "stage_map_boundaries", key="dl-bounds")
    ui.provenance(
        "attention_locality",
        models,
        "The signatures come from the methods attention_locality, component_norms, "
        "logit_lens, lens_entropy, neurons and layer_ablation; their runs are listed on "
        "their pages. Runs of attention_locality:",
    )


main()
