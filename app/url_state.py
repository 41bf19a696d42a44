"""URL state a shared link must reproduce: values checked before a bound widget reads them.

Streamlit's ``bind="query-params"`` drops an invalid URL value without a word and resets an
out-of-range one to the widget's default. For the values that pick *one cell* (a layer, a
position) a page calls ``seed_int`` / ``seed_choice`` just before the widget: they put the value
the widget will show into ``st.session_state`` (so the widget needs no ``value`` argument), clamp
a layer beyond the model's depth to the last one, and say so when the link asked for something
else. The router reports every other link value a page could not use (``report_ignored``).

A bound widget's value appears in the URL once the student changes it; until then the page shows
its default, which depends only on what the URL already holds (model, prompt), so a link without
the value reproduces the same cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st


def lead_int(raw: str) -> int:
    """The number a choice's URL value starts with (``"7: ␣of"`` -> 7)."""
    return int(str(raw).split(":", 1)[0].strip())


def _handled(name: str) -> None:
    """Mark a parameter as already reported by a seed helper (``report_ignored`` skips it)."""
    st.session_state.setdefault("_url_reported", set()).add(name)


def _say(what: str, raw, shown) -> None:
    st.info(f"The link asks for {what} {raw!r}, which this view does not have; showing {shown}.")


def seed_int(name: str, lo: int, hi: int, default: int, what: str) -> int:
    """Seed the bound integer widget ``name``: from the URL or its last value, clamped to range."""
    if name in st.session_state:
        value = st.session_state[name]
        if isinstance(value, int) and not lo <= value <= hi:  # e.g. another model's depth
            st.session_state[name] = min(max(value, lo), hi)
        return st.session_state[name]
    raw = st.query_params.get(name)
    value = default
    if raw not in (None, ""):
        try:
            asked = int(float(raw))
        except ValueError:
            _say(what, raw, default)
            _handled(name)
        else:
            value = min(max(asked, lo), hi)
            if value != asked:
                _handled(name)
                st.info(
                    f"The link asks for {what} {asked}, but here {what} runs from {lo} to {hi}; "
                    f"showing {value}."
                )
    st.session_state[name] = value
    return value


def seed_choice(name: str, options: Sequence, default, what: str, cast=str):
    """Seed the bound choice widget ``name``: from the URL or its last value, else ``default``."""
    if name in st.session_state:
        if st.session_state[name] not in options:  # options changed (another prompt)
            st.session_state[name] = default
        return st.session_state[name]
    raw = st.query_params.get(name)
    value = default
    if raw not in (None, ""):
        try:
            asked = cast(raw)
        except ValueError:
            asked = None
        if asked in options:
            value = asked
            _handled(name)  # used, though perhaps not in the widget's own spelling
        else:
            _say(what, raw, default)
            _handled(name)
    st.session_state[name] = value
    return value


def snapshot() -> dict[str, str]:
    """The URL's parameters before the page runs (for ``report_ignored``)."""
    return {k: st.query_params.get(k) for k in st.query_params}


def report_ignored(asked: dict[str, str]) -> None:
    """Say which of the link's values the page could not use (Streamlit drops them silently)."""
    now = {k: st.query_params.get(k) for k in st.query_params}
    done = st.session_state.pop("_url_reported", set())
    lost = {k: v for k, v in asked.items() if k not in now and k not in done}
    if lost:
        said = ", ".join(f"{k}={v!r}" for k, v in lost.items())
        st.sidebar.warning(f"This link's {said} is not an option on this page; it was ignored.")
