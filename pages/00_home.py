"""Home.

What are the added layers of a language model used for? The map of questions and pages.
"""

import streamlit as st

from app import data, ui

QUESTIONS = [
    ("What do the early layers do?", "Early layers", "Lad et al. 2024; Gandikota et al."),
    ("When does the model know the answer?", "Logit lens", "nostalgebraist 2020; Gandikota et al."),
    (
        "Does the lens repeat the input token early on?",
        "Logit lens",
        "Gandikota et al. (Evolution of LLM Stages)",
    ),
    ("What happens if a layer is deleted or swapped?", "Delete or swap a layer", "Lad et al. 2024"),
    ("Where are facts stored?", "Where are facts stored?", "Meng et al. 2022"),
    ("When is a fact moved to the predicting position?", "When is the fact moved?", "Geva 2023"),
    (
        "When does the model use most of its dimensions?",
        "Intrinsic dimension",
        "Gandikota et al. (Evolution of LLM Stages)",
    ),
    (
        "How do representations evolve with depth and size?",
        "Representation similarity",
        "Gandikota et al. (Evolution of LLM Stages)",
    ),
    ("Do early layers guess and later layers refine?", "Guess, then refine", "Gupta et al. 2025"),
]


def main() -> None:
    """Render the home page."""
    ui.page_header(
        "Stagescope: how a language model uses its depth",
        "A transformer stacks dozens of identical blocks. What is each part of the stack for?",
        [
            ("Lad, Gurnee & Tegmark 2024", "https://arxiv.org/abs/2406.19384"),
            ("Gupta et al. 2025", "https://arxiv.org/abs/2510.18871"),
            ("Skean et al. 2025", "https://arxiv.org/abs/2502.02013"),
        ],
    )
    st.markdown(
        "Every block reads the **residual stream** (a vector per token), computes, and adds its "
        "result back. Stagescope lets you look inside that stream, layer by layer, with the "
        "methods "
        "of interpretability papers, on real numbers computed for several model families."
    )
    st.subheader("The four-stage hypothesis")
    st.markdown(
        "Lad et al. (2024) *propose* that inference proceeds in four stages. It is a hypothesis; "
        "the pages let you check it against the data:\n"
        "1. **Detokenization** (first layers): tokens are merged into words; attention is local.\n"
        "2. **Feature engineering** (early-middle): features are built; the lens says little.\n"
        "3. **Prediction ensembling** (middle-late): the next token emerges; prediction neurons.\n"
        "4. **Residual sharpening** (last layers): suppression neurons calibrate the output."
    )
    st.subheader("Questions and the pages that answer them")
    st.dataframe(
        [{"question": q, "page": p, "source": s} for q, p, s in QUESTIONS],
        hide_index=True,
        width="stretch",
    )
    st.subheader("Models in the loaded results")
    ui.badge("precomputed")
    try:
        models = data.models_table()
    except Exception as err:  # a missing or corrupt results file must not crash the page
        st.error(f"The results could not be read: {err}")
        return
    shown = models[["model", "family", "hf_id", "n_params", "n_layers", "d_model", "weights"]]
    st.dataframe(
        shown.rename(columns={"n_params": "parameters", "n_layers": "blocks"}),
        hide_index=True,
        width="stretch",
        column_config={"parameters": st.column_config.NumberColumn(format="compact")},
    )
    methods = data.methods_present()
    st.caption(
        "Methods present: "
        + ", ".join(f"{r.method} ({r.models} models)" for r in methods.itertuples())
        + f". Source: {data.source().label}."
    )


main()
