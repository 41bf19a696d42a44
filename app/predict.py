"""Predict, then reveal: the student commits to a guess, then the chart shows it beside the data.

A page replaces ``st.altair_chart(chart, width="stretch")`` by ``predict.show(KEY, chart, df)``.
The question, its range and the answer (computed from the page's own ``df``, so it follows the
student's selection) live in ``QUESTIONS`` here, not in the page. In a lesson or a joined class
the chart stays hidden until the student answers; elsewhere the question waits in an expander
and the chart shows at once. A guess is drawn on the chart as a dashed rule, with one line
comparing it to the data; with an active class code it is also sent to the class poll.

Example (in a page)::

    predict.show("lens_answer", chart, df)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import altair as alt
import pandas as pd
import streamlit as st

from app import charts, poll


@dataclass(frozen=True)
class Question:
    """One predict-then-reveal question."""

    key: str
    page: str
    text: str
    lo: float
    hi: float
    step: float
    default: float
    unit: str
    axis: str  # "x": a relative depth on the x-axis; "y": a value on the y-axis
    finding: str  # what the answer is, completing "In the data, ..."
    truth: Callable[[pd.DataFrame], pd.DataFrame]  # page df -> rows (model, value)


def _extreme(df: pd.DataFrame, rows: pd.Series, biggest: bool, field: str) -> pd.DataFrame:
    """Per model: the ``field`` of the row where ``mean`` is largest (or smallest)."""
    df = df[rows] if rows.any() else df
    if df.empty:
        return pd.DataFrame(columns=["model", "value"])
    idx = df.groupby("model")["mean"].idxmax() if biggest else df.groupby("model")["mean"].idxmin()
    return pd.DataFrame({"model": idx.index, "value": df.loc[idx.values, field].to_numpy()})


def _lens_truth(df: pd.DataFrame) -> pd.DataFrame:
    """First relative depth at which the lens agrees with the final top-1 on half the positions."""
    from app.lens_views import curve_frame

    agree = curve_frame("top1_matches_final", sorted(df["model"].unique()))
    first = agree[agree["mean"] >= 0.5].groupby("model")["rel_depth"].min()
    return pd.DataFrame({"model": first.index, "value": first.to_numpy()})


def _delete_truth(df: pd.DataFrame) -> pd.DataFrame:
    """Depth of the block whose deletion moves the output most (least agreement for top-1)."""
    rows = df.get("intervention", pd.Series("", index=df.index)) == "delete block"
    worse_is_lower = bool((df.get("metric", pd.Series(dtype=str)) == "top1_same").any())
    return _extreme(df, rows, biggest=not worse_is_lower, field="rel_depth")


QUESTIONS = {
    q.key: q
    for q in [
        Question(
            "lens_answer",
            "logit_lens",
            "When does the answer appear? At what relative depth does the lens first pick the "
            "model's final token on at least half of the positions?",
            0.0,
            1.0,
            0.05,
            0.5,
            "relative depth",
            "x",
            "the lens first agrees with the final output on half the positions at depth",
            _lens_truth,
        ),
        Question(
            "delete_hurts",
            "delete_swap",
            "Which block's deletion hurts most? Guess its relative depth (0 = first, 1 = last).",
            0.0,
            1.0,
            0.05,
            0.5,
            "relative depth",
            "x",
            "deleting the block at this depth hurts most:",
            _delete_truth,
        ),
        Question(
            "fact_site",
            "facts_stored",
            "Where is the fact? At what relative depth does restoring the last subject token "
            "bring the answer back most?",
            0.0,
            1.0,
            0.05,
            0.5,
            "relative depth",
            "x",
            "restoring the last subject token helps most at depth",
            lambda df: _extreme(df, df["grp"] == "last_subject", True, "rel_depth"),
        ),
        Question(
            "fact_moved",
            "facts_moved",
            "When is the fact moved? At what relative depth does cutting the subject's attention "
            "to the last token hurt the answer most?",
            0.0,
            1.0,
            0.05,
            0.5,
            "relative depth",
            "x",
            "cutting subject → last hurts most at depth",
            lambda df: _extreme(df, df["grp"] == "subject", False, "rel_depth"),
        ),
        Question(
            "id_dims",
            "intrinsic_dimension",
            "How many dimensions? The states have hundreds of coordinates: at its widest, how "
            "many dimensions does the cloud of text representations really use?",
            1.0,
            100.0,
            1.0,
            50.0,
            "dimensions",
            "y",
            "the largest estimate is",
            lambda df: _extreme(df, df["mean"].notna(), True, "mean"),
        ),
    ]
}


def gated() -> bool:
    """Whether charts wait for a guess: in a lesson, or with a class joined."""
    from app import lessons

    return bool(st.session_state.get("class_code")) or lessons.active() is not None


@st.cache_resource
def get_poll() -> poll.Poll:
    """The class poll of this process (the database from the environment)."""
    return poll.Poll(poll.engine_from_env())


def compare(q: Question, guess: float, truth: pd.DataFrame) -> str:
    """One line comparing a guess with the answer in the data."""
    if truth.empty:
        return f"Your guess: {guess:g} {q.unit}. The data shown have no answer to compare with."
    fmt = "{:.2f}" if q.unit == "relative depth" else "{:.1f}"
    per_model = ", ".join(f"{m} {fmt.format(v)}" for m, v in zip(truth["model"], truth["value"]))
    mean = float(truth["value"].mean())
    gap = guess - mean
    if abs(gap) <= q.step + 1e-9:
        verdict = "right on"
    elif q.axis == "x":
        verdict = f"{fmt.format(abs(gap))} {'too early' if gap < 0 else 'too late'}"
    else:
        verdict = f"{fmt.format(abs(gap))} {q.unit} {'too few' if gap < 0 else 'too many'}"
    return (
        f"**Your guess: {fmt.format(guess)}** — in the data, {q.finding} {per_model} "
        f"(mean {fmt.format(mean)}): {verdict}."
    )


def overlay(chart, guess: float, q: Question):
    """Draw the guess on a chart as a dashed rule (x: a depth, y: a value)."""
    return charts.guess_rule(chart, guess, q.axis)


def _submit(q: Question, guess: float) -> None:
    code = st.session_state.get("class_code")
    if not code:
        return
    token = st.session_state.setdefault("student_token", poll.new_token())
    try:
        get_poll().submit(code, token, q.key, guess)
        st.toast(f"Sent to class {code}.", icon="📨")
    except poll.PollError as err:
        st.warning(str(err))


def ask(key: str) -> float | None:
    """Render the question (or the committed guess) and return the guess, if any."""
    q = QUESTIONS[key]
    state = f"guess_{key}"
    if state in st.session_state:
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        c1.caption(f"🤔 {q.text}")
        if c2.button("Guess again", key=f"predict_{key}_again"):
            del st.session_state[state]
            st.rerun()
        return float(st.session_state[state])
    box = st.container(border=True) if gated() else st.expander(f"🤔 Predict first: {q.text}")
    with box:
        if gated():
            st.markdown(f"🤔 **Predict first.** {q.text}")
        value = st.slider(
            f"Your guess ({q.unit})",
            q.lo,
            q.hi,
            q.default,
            q.step,
            key=f"predict_{key}_value",
        )
        if st.button("Reveal", type="primary", key=f"predict_{key}_go"):
            st.session_state[state] = float(value)
            _submit(q, float(value))
            return float(value)
    return None


def ask_first(key: str, df: pd.DataFrame) -> bool:
    """Ask before several charts: False while they must stay hidden; the comparison once known."""
    guess = ask(key)
    if guess is None:
        if gated():
            st.caption("The charts appear once you have committed to a guess.")
        return not gated()
    st.markdown(compare(QUESTIONS[key], guess, QUESTIONS[key].truth(df)))
    return True


def draw(key: str, chart):
    """The chart with the student's committed guess drawn on it (unchanged without a guess)."""
    guess = st.session_state.get(f"guess_{key}")
    return chart if guess is None else overlay(chart, float(guess), QUESTIONS[key])


def show(key: str, chart, df: pd.DataFrame, where=None) -> None:
    """Ask, then draw ``chart`` (hidden until the guess in a lesson) with the guess and a verdict.

    Args:
        key: A ``QUESTIONS`` key.
        chart: The page's Altair chart.
        df: The chart's data (the answer is computed from it).
        where: A container to draw the chart in (default: the page).
    """
    if ask_first(key, df):
        (where or st).altair_chart(draw(key, chart), width="stretch")


def _default_frame(key: str) -> pd.DataFrame:
    """The rows a question's page shows in its default state (the teacher's answer key)."""
    from app import data

    if key == "lens_answer":
        from app.lens_views import curve_frame

        return curve_frame("kl_to_final", data.models_for("logit_lens"))
    if key == "delete_hurts":
        from app.robustness_views import depth_frame

        return depth_frame("kl")
    if key == "fact_site":
        from app.facts_views import group_curves

        return group_curves("mlp", "facts", ["last_subject"])
    if key == "fact_moved":
        from app.flow_views import knockout_curves, windows

        found = windows("facts")
        return knockout_curves("facts", found[0]) if found else pd.DataFrame()
    from app.representation_views import id_curves

    return id_curves("twonn", "mean", "wikitext", "1/1")


def default_answer(key: str) -> pd.DataFrame:
    """Per model, the answer to a question on its page's default view (empty if no data)."""
    try:
        df = _default_frame(key)
        return QUESTIONS[key].truth(df) if not df.empty else pd.DataFrame(columns=["model"])
    except Exception:  # results without that method: the histogram shows without an answer
        return pd.DataFrame(columns=["model", "value"])


def class_chart(key: str, values: list[float], bins: int = 10) -> alt.LayerChart:
    """The class's guesses as a histogram, with each model's answer as a labelled rule."""
    q = QUESTIONS[key]
    hist = pd.DataFrame(poll.histogram(values, q.lo, q.hi, bins))
    return charts.guess_histogram(hist, default_answer(key), q.unit, q.text)
