"""Human labels for the raw option values the menus offer (``format_func`` of each widget).

Streamlit writes a bound widget's *label* into the URL, so a label here is also what a shared
link carries; keep them stable.
"""

from __future__ import annotations

import re

#: Stimulus sets as the student should read them.
DATASETS = {
    "wikitext": "WikiText-2 paragraphs",
    "facts": "the team's facts",
    "known_1000": "known_1000 facts (ROME)",
    "facts_known": "the team's facts + known_1000 (ROME), deduplicated",
    "mcq": "multiple-choice questions",
    "examples": "the team's example prompts",
    "weights": "the weights alone (no text)",
}


def dataset(name: str) -> str:
    """``wikitext`` -> ``WikiText-2 paragraphs`` (unknown names are shown as they are)."""
    return DATASETS.get(name, name)


def window(variant: str) -> str:
    """A knockout window ``W9`` -> ``9 layers at a time``."""
    n = re.sub(r"\D", "", str(variant))
    return f"{n} layers at a time" if n else str(variant)
