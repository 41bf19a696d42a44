"""The live model service: one small model per process, shared by every session.

The model is loaded once (``st.cache_resource``) and never mutated by a page: every forward pass
goes through the method functions of ``precompute``, which hold the model's lock, so hooks added
for one session never touch another's pass. TransformerLens is imported lazily (it takes seconds).
"""

from __future__ import annotations

import streamlit as st

from app.config import AppConfig


class PromptError(ValueError):
    """A prompt the live panel cannot run; the message says what to change."""


def config() -> AppConfig:
    """This process's app settings."""
    return AppConfig.from_env()


@st.cache_resource(
    show_spinner="Loading the live model (first time only, ~30 s) ...", max_entries=2
)
def get_model(name: str):
    """Load (once per process) and return a ``precompute.model.load.LoadedModel``."""
    from precompute.model.load import load_model

    return load_model(name, device="auto")


def check_prompt(prompt: str, max_chars: int | None = None) -> str:
    """Validate a student's prompt; return it stripped of trailing whitespace.

    Raises:
        PromptError: Empty, or longer than the live limit.
    """
    limit = max_chars or config().max_prompt_chars
    text = (prompt or "").rstrip()
    if not text.strip():
        raise PromptError("Type a prompt first: the box is empty.")
    if len(text) > limit:
        raise PromptError(
            f"This prompt has {len(text):,} characters; the live panel takes at most {limit:,}. "
            "Shorten it (the precomputed pages cover long documents)."
        )
    return text


def model_picker(key: str = "live_model") -> str:
    """A select box of the live models, mirrored in the URL."""
    models = list(config().live_models)
    return st.selectbox("Live model", models, key=key, bind="query-params")
