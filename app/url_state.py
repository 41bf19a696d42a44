"""URL state a shared link must reproduce exactly: read, checked and reported, then written back.

Streamlit's ``bind="query-params"`` leaves a widget's default out of the URL (so a shared link
opened on another prompt shows another cell) and drops an invalid value without a word. For the
few values that pick *one cell* (a layer, a position) the page reads the URL itself with these
helpers: a layer beyond the model's depth is clamped and said so, an unknown value is reported,
and the value shown is always written to the URL, from the first run on.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st


def read_int(name: str, lo: int, hi: int, default: int, what: str) -> int:
    """The integer in URL parameter ``name``, clamped to ``[lo, hi]`` with a note; else default."""
    raw = st.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(float(raw))
    except ValueError:
        st.info(f"The link asks for {what} {raw!r}, which is not a number; showing {default}.")
        return default
    clamped = min(max(value, lo), hi)
    if clamped != value:
        st.info(
            f"The link asks for {what} {value}, but here {what} runs from {lo} to {hi}; "
            f"showing {clamped}."
        )
    return clamped


def read_choice(name: str, options: Sequence, default, what: str, cast=str):
    """The option in URL parameter ``name``; an unknown one is reported and ``default`` used."""
    raw = st.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = None
    if value in options:
        return value
    st.info(f"The link asks for {what} {raw!r}, which this view does not have; showing {default}.")
    return default


def write(**values) -> None:
    """Put the values shown into the URL (so a copied link reproduces this view)."""
    for name, value in values.items():
        if st.query_params.get(name) != str(value):
            st.query_params[name] = str(value)
