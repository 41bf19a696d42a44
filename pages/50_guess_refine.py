"""Guess, then refine.

Do early layers guess frequent tokens that later layers refine? Logit and tuned lens side by side.
"""

import streamlit as st

from app import charts, data, ui
from app import lens_compare_views as V

METHOD = V.GR


def buckets(models: list[str]) -> None:
    """Show (a) bucket shares of the lens top-1 token by relative depth."""
    st.subheader("What do early layers guess? Frequent tokens.")
    df = V.bucket_shares(models)
    st.altair_chart(
        charts.stacked_shares(df, [V.BUCKET_LABELS[b] for b in V.BUCKETS]), width="content"
    )
    st.markdown(
        "**What to notice.** Gupta et al. (with well-trained tuned lenses on 7B models) find the "
        "top token of early layers is most often one of the most frequent tokens (a statistical "
        "guess), refined with depth. Check whether your instrument agrees: here the logit lens "
        "shows the frequent-token guess in middle layers, while our tuned lenses -- trained on a "
        "CPU budget of about a thousand tokens, far from the paper's 65M -- spread early "
        "predictions over rarer tokens. The last column is the model itself."
    )
    ui.download(df, "guess_refine_buckets", key="dl-buckets")


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
    st.markdown(
        "**What to notice.** A flip means the layer's best token is not the model's final one. "
        "Seed 001 reports that more than 70 % of early top-10-frequency guesses are refined. The "
        "rate is 0 at the last layer by construction (the lens there *is* the model)."
    )
    ui.download(df, f"guess_refine_flips_{model}", key="dl-flips")


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
    st.markdown(
        "**What to notice.** Lower curves mean the model's prediction enters the top k earlier. "
        "Frequent predictions (often function words) get there first; for multi-token answers the "
        "first token needs the most depth, later tokens follow almost for free. A part-of-speech "
        "breakdown (seed 001) needs spaCy's English tagger, which is not installable from PyPI "
        "here, so the frequency of the predicted token stands in for it."
    )
    ui.download(df, f"guess_refine_earliest_{model}", key="dl-earliest")


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
    st.dataframe(V.mcq_settled([model]), hide_index=True, width="stretch")
    st.markdown(
        "**What to notice.** The option letters A-D enter the top 10 (the *format*) well before "
        "the layer whose best option stays the model's final pick (the *decision*), which comes "
        "near the end. Items are the team's own (`data/prompts/mcq.json`), shown after two solved "
        "examples; a small model answers many of them wrong, which does not change the timing."
    )
    ui.download(one, f"guess_refine_mcq_{model}", key="dl-mcq")


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
    st.markdown(
        "For each prompt we read the residual stream at the last position, layer by layer, "
        "through two lenses: the **logit lens** (final norm + unembedding) and the **tuned lens** "
        "(a learned affine translator per layer first). Each predicted token is placed in a "
        "frequency bucket by its rank in WikiText-2, tokenised by the model's own tokenizer."
    )
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
    ui.provenance(
        METHOD,
        models,
        "WikiText-2 test paragraphs cut at a seeded random word boundary (≥ 17 characters); "
        "frequency ranks counted on all paragraphs of the same file (the run's dataset sha256). "
        "Each row is one prompt; means and 95 % intervals over prompts. Facts: greedy answer must "
        "match the first answer token; later tokens teacher-forced and kept only when correct. "
        "The tuned lens is the one trained by `tuned_lens` (see the Lens disagreement page).",
    )


main()
