"""The words a student meets on the pages, the papers by name and year, and the seed questions.

The glossary page (``pages/05_glossary.py``) draws these tables; other pages link to it with
``link()`` and explain drawn tokens with ``token_key()``.
"""

from __future__ import annotations

import streamlit as st

#: URL path of the glossary page (the router takes it from the file name).
PATH = "/glossary"

PAPERS = [
    (
        "nostalgebraist 2020",
        "interpreting GPT: the logit lens (blog post)",
        "https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru",
    ),
    (
        "Meng et al. 2022",
        "Locating and Editing Factual Associations in GPT (ROME)",
        "https://arxiv.org/abs/2202.05262",
    ),
    (
        "Geva et al. 2023",
        "Dissecting Recall of Factual Associations in Auto-Regressive LMs",
        "https://arxiv.org/abs/2304.14767",
    ),
    (
        "Belrose et al. 2023",
        "Eliciting Latent Predictions with the Tuned Lens",
        "https://arxiv.org/abs/2303.08112",
    ),
    (
        "Valeriani et al. 2023",
        "The geometry of hidden representations of large transformer models",
        "https://arxiv.org/abs/2302.00294",
    ),
    (
        "Zhang & Nanda 2023",
        "Towards Best Practices of Activation Patching",
        "https://arxiv.org/abs/2309.16042",
    ),
    (
        "Gurnee et al. 2024",
        "Universal Neurons in GPT2 Language Models",
        "https://arxiv.org/abs/2401.12181",
    ),
    (
        "Lad, Gurnee & Tegmark 2024",
        "The Remarkable Robustness of LLMs: Stages of Inference?",
        "https://arxiv.org/abs/2406.19384",
    ),
    (
        "Skean et al. 2024",
        "Does Representation Matter? Exploring Intermediate Layers in LLMs",
        "https://arxiv.org/abs/2412.09563",
    ),
    (
        "Gupta et al. 2025",
        "How Do LLMs Use Their Depth? (guess, then refine)",
        "https://arxiv.org/abs/2510.18871",
    ),
]

#: The documents this app grew from. Pages say "seed 000" where a claim comes from one of them.
SEEDS = [
    (
        "seed 000",
        "Evolution of LLM Stages — a research project by Gandikota, Loftus, Bompilwar, "
        "Rager et al.",
        "What are the early layers doing? When does the model know the answer? Where "
        "are facts stored and when are they moved (causal tracing, attention knockout)? How many "
        "dimensions does each layer use, and how do representations change with depth and size?",
    ),
    (
        "seed 001",
        "Gupta et al. 2025, How Do LLMs Use Their Depth?",
        "Do models guess early with "
        "frequent tokens and refine later? Are easy tokens settled earlier than hard ones?",
    ),
    (
        "seed 002",
        "Skean et al. 2024, Does Representation Matter?",
        "Are middle layers better "
        "representations than the last one (prompt entropy, curvature, invariance)?",
    ),
    (
        "seeds 003, 004",
        "Lad, Gurnee & Tegmark 2024, The Remarkable Robustness of LLMs: Stages of "
        "Inference? (slides and paper)",
        "Can a layer be deleted or swapped without breaking the "
        "model? Are there four stages: detokenization, feature engineering, prediction ensembling, "
        "residual sharpening?",
    ),
]

TERMS = [
    (
        "token",
        "The unit a model reads and writes: a word, a piece of a word, a space or a byte. "
        "Drawn with ␣ for a space, ↵ for a new line, ⇥ for a tab, ⍽ for a non-breaking space.",
    ),
    (
        "byte token ⟨byte⟩",
        "Tokenizers that work on bytes split a rare character (an accent, an "
        "emoji) into several tokens, each one byte; one byte alone is not a character, so it is "
        "shown as ⟨byte⟩ (a plain decoder shows �).",
    ),
    (
        "layer, block",
        "One transformer block: attention, then an MLP, each adding to the residual "
        "stream. Blocks are numbered 0 … L−1.",
    ),
    (
        "residual stream, residual state",
        "The running vector of each token that every block "
        "adds to. State 0 is the embedding; state i is after block i−1, so L blocks give "
        "L+1 states.",
    ),
    (
        "relative depth",
        "Where a layer sits in its model, from 0 (first) to 1 (last), so models "
        "of different depth share one x-axis.",
    ),
    (
        "logit lens",
        "Read a layer's residual state as if it were the last: final norm, then "
        "unembedding, then softmax (nostalgebraist 2020).",
    ),
    (
        "tuned lens",
        "A logit lens with a small learned translator per layer, trained so each "
        "layer's reading matches the final output (Belrose et al. 2023).",
    ),
    (
        "recompute_ln / cached_final_scale",
        "Two ways to apply the final norm in a lens: "
        "recompute its scale on each layer's own state (the true lens), or reuse the last layer's "
        "scale for every layer (what TransformerLens did before 2.18).",
    ),
    (
        "KL to final (nats)",
        "How surprised the lens's distribution is by the model's real output "
        "distribution; 0 means identical. Nats use the natural log (1 nat = 1.44 bits).",
    ),
    (
        "entropy (nats or bits)",
        "How spread out a distribution is: 0 is certain; log(vocabulary size) is a uniform guess.",
    ),
    ("top-1 token, top-1 probability", "The most likely next token, and its probability."),
    (
        "causal tracing",
        "Corrupt the subject's embeddings with noise, then restore one clean state "
        "at a time and see how much of the answer's probability comes back (Meng et al. 2022).",
    ),
    (
        "attention knockout",
        "Stop attention from some tokens to the last token in a window of "
        "layers and measure how the prediction changes (Geva et al. 2023).",
    ),
    (
        "activation patching",
        "Copy one state from a clean run into a run on another subject and "
        "see whether the clean answer returns (Zhang & Nanda 2023).",
    ),
    (
        "prediction / suppression neuron",
        "An MLP neuron whose output raises (prediction) or "
        "lowers (suppression) a few tokens' logits (Gurnee et al. 2024).",
    ),
    (
        "intrinsic dimension",
        "How many directions the points of a layer really spread along, "
        "estimated from distances to nearest neighbours (TwoNN).",
    ),
    (
        "probe",
        "A small classifier trained on a layer's states; its accuracy says what is "
        "linearly readable there.",
    ),
    ("95 % interval", "The band around a mean: mean ± 1.96 standard errors over items."),
    (
        "stages (hypothesis)",
        "The four stages Lad et al. 2024 propose, drawn as grey bands on "
        "depth charts: detokenization (~0–0.1), feature engineering (~0.1–0.5), prediction "
        "ensembling (~0.5–0.85), residual sharpening (~0.85–1).",
    ),
]


#: Short names of the reference code the methods were checked against (METHODS.md, in the repo).
CODE = [
    (
        "LAD's code",
        "The public code of Lad, Gurnee & Tegmark 2024 (github.com/vdlad/"
        "Remarkable-Robustness-of-LLMs): layer deletion and swap, attention locality, lens "
        "entropy.",
    ),
    ("ROME code", "The public code of Meng et al. 2022 (github.com/kmeng01/rome): causal tracing."),
    ("GEVA notebook", "Geva et al. 2023's attention-knockout notebook (google-research)."),
    (
        "TL, TransformerLens",
        "The TransformerLens library; also the tuned-lens code of Belrose "
        "et al. (AlignmentResearch/tuned-lens) where a page says 'TL defaults'.",
    ),
    (
        "METHODS.md A1 … E4",
        "Sections of the project's methods document (in the repository): "
        "what each analysis computes, with its defaults and checks.",
    ),
]


def link(word: str = "glossary") -> str:
    """A Markdown link to the glossary page."""
    return f"[{word}]({PATH})"


def footer(current_page: str) -> None:
    """A line under every page that points to the glossary (not on the glossary itself)."""
    if current_page != PATH.strip("/"):
        st.divider()
        st.caption(
            f"A word you don't know, a paper cited by name, a 'seed' mentioned? See the {link()}."
        )


def token_key() -> None:
    """Say how tokens are drawn: whitespace made visible, byte pieces named."""
    st.caption(
        "Tokens as shown: ␣ a space, ↵ a new line, ⇥ a tab, ⍽ a non-breaking space, ⟨byte⟩ one "
        "byte of a character the tokenizer split over several tokens (see the "
        f"{link()}, *token*)."
    )
