"""Guess, then refine.

Do early layers guess frequent tokens that later layers refine? Logit and tuned lens side by side.
"""

import streamlit as st

from app import charts, data, ui
from app import lens_compare_views as V
from app.claims_facts_views import earliest_finding, early_share_finding, mcq_finding

METHOD = V.GR


def buckets(models: list[str]) -> None:
    """Show (a) bucket shares of the lens top-1 token by relative depth."""
    st.subheader("What do early layers guess? Frequent tokens.")
    df = V.bucket_shares(models)
    st.altair_chart(
        charts.stacked_shares(df, [V.BUCKET_LABELS[b] for b in V.BUCKETS]), width="content"
    )
    ui.sample_caption(df, "prompts")
    st.markdown(V.BUCKETS_NOTE)
    top10 = df[df["grp"] == "top10"]
    ui.findings(early_share_finding(top10, "Share of top-1 tokens among the 10 most frequent"))
    V.offer(df, "guess_refine_buckets", "buckets", "dl-buckets")


def refines(models: list[str]) -> None:
    """Show (b) the flip ("refined") rate per bucket."""
    st.subheader("How often is an early guess refined later?")
    model = st.selectbox("Model", models, key="gr_model", bind="query-params")
    df = V.flip_rates([model])
    st.altair_chart(
        charts.depth_lines(
            df,
            "refined rate: top-1 differs from the final token (fraction)",
            color="bucket",
            stroke_dash="lens",
        ),
        width="stretch",
    )
    ui.sample_caption(df, "prompts")
    st.markdown(
        "**What to look for.** A flip means the layer's best token is not the model's final one. "
        "Gupta et al. (2025) report that more than 70 % of early top-10-frequency guesses are "
        "refined. The rate is 0 at the last layer by construction (the lens there *is* the model)."
    )
    flips = df[df["grp"] == "top10"]
    ui.findings(early_share_finding(flips, "Refined rate of top-10-frequency guesses"))
    V.offer(df, f"guess_refine_flips_{model}", "flips", "dl-flips")


def earliest(models: list[str]) -> None:
    """Show (c) the earliest layer at which the prediction reaches rank <= k."""
    st.subheader("Easy tokens settle early, hard ones late")
    c1, c2 = st.columns(2)
    model = c1.selectbox("Model", models, key="gr_k_model", bind="query-params")
    stable = c2.toggle("stays within the top k from then on", key="gr_stable", bind="query-params")
    metric = "stable_layer_le_k" if stable else "earliest_layer_le_k"
    df = V.earliest_curves([model], "wikitext", metric)
    df["frequency of the prediction"] = (
        df["group"].str.removeprefix("pred:").map({**V.BUCKET_LABELS, "all": "all predictions"})
    )
    st.markdown("**By how frequent the predicted token is** (WikiText prefixes)")
    st.altair_chart(
        charts.k_curves(
            df,
            "frequency of the prediction",
            "predicted token",
            "By how frequent the prediction is",
        ),
        width="stretch",
    )
    ui.sample_caption(df, "prompts")
    facts = V.earliest_curves([model], "facts", metric)
    if facts.empty:
        facts = V.earliest_curves([model], "known_1000", metric)
    if not facts.empty:
        facts["answer token"] = facts["group"].map(V.FACT_GROUPS)
        st.markdown("**Multi-token answers, by token index** (facts the model gets right)")
        st.altair_chart(
            charts.k_curves(facts, "answer token", "answer token", "By answer token"),
            width="stretch",
        )
        ui.sample_caption(facts, "answer tokens")
        V.offer(facts, f"guess_refine_answers_{model}", "k_answer", csv=False)
    st.markdown(V.EARLIEST_NOTE)
    ui.findings(earliest_finding(df, "frequency of the prediction"))
    if not facts.empty:
        ui.findings(earliest_finding(facts, "answer token"), "Answer tokens")
    V.offer(df, f"guess_refine_earliest_{model}", "k_freq", "dl-earliest")


def choices(models: list[str]) -> None:
    """Show (d) multiple choice: the format settles before the decision."""
    st.subheader("Multiple choice: format first, decision last")
    df = V.mcq_layers(models)
    if df.empty:
        st.info("No multiple-choice rows in these results.")
        return
    model = st.selectbox("Model", models, key="gr_mcq_model", bind="query-params")
    one = df[df["model"] == model]
    st.altair_chart(
        charts.depth_lines(one, "share of items (fraction)", color="what", stroke_dash="lens"),
        width="stretch",
    )
    ui.sample_caption(one, "multiple-choice items")
    st.dataframe(V.mcq_settled([model]), hide_index=True, width="stretch")
    st.markdown(V.MCQ_NOTE)
    ui.findings(mcq_finding(V.mcq_settled([model])))
    V.offer(one, f"guess_refine_mcq_{model}", "mcq", "dl-mcq")


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Guess, then refine",
        "Do early layers make statistical guesses — frequent tokens — that later layers refine "
        "into the answer? And which predictions need the most depth?",
        [
            ("Gupta et al. 2025", "https://arxiv.org/abs/2510.18871"),
            ("Belrose et al. 2023 (tuned lens)", "https://arxiv.org/abs/2303.08112"),
        ],
    )
    st.markdown(V.INTRO_GR)
    ui.badge("precomputed")
    models = data.models_for(METHOD)
    if not models:
        ui.no_results(METHOD)
        return
    if not (V.bucket_shares(models)["variant"] == "tuned").any():
        st.info("No tuned lens was trained for these models yet: only the logit lens is shown.")
    buckets(models)
    refines(models)
    earliest(models)
    choices(models)
    ui.provenance(METHOD, models, V.GR_PROVENANCE)


main()
