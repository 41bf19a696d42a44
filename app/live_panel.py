"""Live-panel plumbing shared by every page: the prompt box and the Run button.

* The prompt box has no hard character cap: a long paste is kept, the box says it is too long,
  and Run answers with ``live.check_prompt``'s message (a capped box silently refused the paste
  and Run analysed the old prompt).
* Run clears the previous result before it starts (no stale chart under a new error), shows that
  it runs (a status box with the elapsed time, a progress bar when the method reports progress),
  removes that status when it ends, and offers Stop for the slow methods. Stop works because a
  click reruns the script, which interrupts the running one at its next Streamlit call (each
  progress report is one).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import streamlit as st

from app import live


def prompt_box(
    label: str,
    value: str,
    key: str,
    limit: int | None = None,
    area: bool = True,
    help: str | None = None,
) -> str:
    """A prompt box mirrored in the URL that accepts any paste; says when it is over the limit."""
    limit = limit or live.config().max_prompt_chars
    widget = st.text_area if area else st.text_input
    text = widget(label, value=value, key=key, bind="query-params", help=help) or ""
    if len(text.rstrip()) > limit:
        st.caption(
            f":orange[This prompt has {len(text.rstrip()):,} characters; the live panel takes at "
            f"most {limit:,}. Run will ask you to shorten it.]"
        )
    return text


def run(
    label: str,
    key: str,
    compute: Callable,
    spinner: str = "Running the model ...",
    progress: bool = False,
    stoppable: bool = False,
):
    """A Run button (and Stop for slow methods) that keeps only the latest good result.

    Args:
        label: Button label.
        key: Session-state key of the result; the buttons are ``key + "_run"`` / ``"_stop"``.
        compute: Called with no argument, or with a ``report(fraction)`` callback when
            ``progress``; raises ``ValueError`` (including ``live.PromptError``) with a message
            for the student.
        spinner: What the status box says while it runs.
        progress: Draw a progress bar fed by ``report``.
        stoppable: Offer a Stop button (for methods that run longer than a few seconds).

    Returns:
        The latest result, or None (nothing run yet, stopped, or the last run failed).
    """
    cols = st.columns([1, 1, 3]) if stoppable else [st.container()]
    clicked = cols[0].button(label, type="primary", key=f"{key}_run")
    if stoppable and cols[1].button("Stop", key=f"{key}_stop"):
        st.session_state.pop(key, None)
        st.info("Stopped. Press the button again to start a new run.")
        return None
    if not clicked:
        return st.session_state.get(key)
    st.session_state.pop(key, None)  # a new run: the old result must not stay under it
    slot = st.empty()
    start = time.monotonic()
    try:
        with slot.status(spinner, expanded=progress) as status:
            if progress:
                bar = st.progress(0.0, text=spinner)

                def report(fraction: float) -> None:
                    f = min(max(float(fraction), 0.0), 1.0)
                    bar.progress(f, text=f"{spinner} {f:.0%}, {time.monotonic() - start:.0f} s")

                result = live.run(lambda: compute(report), heavy=stoppable)  # queue, time limit
            else:
                result = live.run(compute, heavy=stoppable)  # queue, time limit
            status.update(label="Done", state="complete")
    except ValueError as err:  # includes live.PromptError
        slot.empty()
        st.warning(str(err))
        return None
    slot.empty()
    st.session_state[key] = result
    st.caption(f"Computed live in {time.monotonic() - start:.1f} s.")
    return result
