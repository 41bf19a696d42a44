"""Predict, then reveal: answers computed from the data, the guess drawn, the flow on a page."""

from __future__ import annotations

import json
from pathlib import Path

import altair as alt
import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app import poll, predict

ROOT = Path(__file__).resolve().parent.parent
AGG = ROOT / "data" / "results" / "tables" / "metrics_agg.parquet"
ID_PAGE = str(ROOT / "pages" / "40_intrinsic_dimension.py")


def _q(sql: str) -> pd.DataFrame:
    """Query the embedded parquet table directly (not through the app's connection)."""
    with duckdb.connect(":memory:") as con:
        con.execute(f"CREATE VIEW metrics_agg AS SELECT * FROM read_parquet('{AGG.as_posix()}')")
        return con.execute(sql).df()


def _by_model(df: pd.DataFrame) -> dict[str, float]:
    return {m: round(float(v), 6) for m, v in zip(df["model"], df["value"])}


def test_every_question_names_a_page_and_a_sane_range():
    from app import lessons

    for q in predict.QUESTIONS.values():
        assert q.page in lessons.pages()
        assert q.lo <= q.default <= q.hi and q.step > 0 and q.axis in ("x", "y")


def test_answers_are_computed_from_the_data():
    """Each answer equals an independent query of the embedded tables."""
    from app.representation_views import id_curves

    ids = id_curves("twonn", "mean", "wikitext", "1/1")
    want = _q(
        """SELECT model, max(mean) AS value FROM metrics_agg WHERE method = 'intrinsic_dimension'
           AND metric = 'intrinsic_dim' AND grp = 'twonn|mean' AND dataset = 'wikitext'
           AND variant = '1/1' GROUP BY model"""
    )
    assert _by_model(predict.QUESTIONS["id_dims"].truth(ids)) == _by_model(want)

    from app.lens_views import curve_frame

    lens = curve_frame("kl_to_final", ["smollm2-135m", "gemma3-270m"])
    want = _q(
        """SELECT model, min(rel_depth) AS value FROM metrics_agg WHERE method = 'logit_lens'
           AND metric = 'top1_matches_final' AND variant = 'recompute_ln'
           AND dataset = 'wikitext' AND mean >= 0.5 GROUP BY model"""
    )
    assert _by_model(predict.QUESTIONS["lens_answer"].truth(lens)) == _by_model(want)

    from app.robustness_views import depth_frame

    for metric, pick in (("kl", "arg_max"), ("top1_same", "arg_min")):
        want = _q(
            f"""SELECT model, {pick}(rel_depth, mean) AS value FROM metrics_agg
                WHERE method = 'layer_ablation' AND variant = 'block' AND metric = '{metric}'
                AND dataset = 'wikitext' GROUP BY model"""
        )
        got = predict.QUESTIONS["delete_hurts"].truth(depth_frame(metric))
        assert _by_model(got) == _by_model(want), metric


def test_comparison_line():
    q = predict.QUESTIONS["lens_answer"]
    truth = pd.DataFrame({"model": ["a", "b"], "value": [0.8, 1.0]})
    line = predict.compare(q, 0.3, truth)
    assert "0.30" in line and "a 0.80" in line and "b 1.00" in line and "mean 0.90" in line
    assert "0.60 too early" in line
    assert "too late" in predict.compare(q, 1.0, pd.DataFrame({"model": ["a"], "value": [0.5]}))
    assert "right on" in predict.compare(q, 0.9, truth)
    dims = predict.QUESTIONS["id_dims"]
    assert "too few" in predict.compare(dims, 5, pd.DataFrame({"model": ["a"], "value": [20.0]}))
    assert "no answer" in predict.compare(q, 0.5, truth.iloc[:0])


@pytest.mark.parametrize("configured", [False, True])
def test_guess_is_drawn_on_the_chart(configured):
    df = pd.DataFrame({"rel_depth": [0.0, 0.5, 1.0], "mean": [1.0, 2.0, 3.0]})
    chart = alt.Chart(df).mark_line().encode(x="rel_depth:Q", y="mean:Q")
    if configured:
        chart = chart.configure_axis(labelFontSize=14)  # configs cannot sit inside a layer
    spec = predict.overlay(chart, 0.35, predict.QUESTIONS["lens_answer"]).to_dict()
    rules = [lay for lay in spec["layer"] if lay["mark"]["type"] == "rule"]
    assert len(rules) == 1 and rules[0]["encoding"]["x"]["field"] == "g"
    values = [row["g"] for rows in spec.get("datasets", {}).values() for row in rows if "g" in row]
    assert values == [0.35]
    assert ("axis" in spec.get("config", {})) == configured  # the chart's config is kept


def _rule_charts(at: AppTest) -> int:
    return sum('"strokeDash": [6, 3]' in c.proto.spec for c in at.get("vega_lite_chart"))


def test_predict_then_reveal_flow_with_a_class(monkeypatch, tmp_path):
    monkeypatch.setenv("STAGESCOPE_POLL_DB", str(tmp_path / "poll.sqlite"))
    p = poll.Poll(poll.engine_from_env())
    cls = p.open_class()
    at = AppTest.from_file(ID_PAGE, default_timeout=120)
    at.session_state["class_code"] = cls.code  # as the classroom page's join box sets it
    at.run()
    assert not at.exception
    hidden = len(at.get("vega_lite_chart"))
    assert _rule_charts(at) == 0
    assert any("committed to a guess" in c.value for c in at.caption)
    at.slider(key="predict_id_dims_value").set_value(12.0)
    at.button(key="predict_id_dims_go").click().run()
    assert not at.exception
    assert len(at.get("vega_lite_chart")) == hidden + 1  # the chart appears ...
    assert _rule_charts(at) == 1  # ... with the guess drawn on it
    verdict = [m.value for m in at.markdown if "Your guess: 12.0" in m.value]
    assert len(verdict) == 1 and "largest estimate" in verdict[0]
    assert p.answers(cls.code, cls.teacher_token, "id_dims") == [12.0]  # sent to the class
    at.run()  # the next rerun keeps the reveal and offers to guess again
    assert _rule_charts(at) == 1
    at.button(key="predict_id_dims_again").click().run()  # guess again: the question returns
    assert _rule_charts(at) == 0 and "guess_id_dims" not in at.session_state


def test_outside_a_class_the_chart_shows_and_the_question_waits():
    at = AppTest.from_file(ID_PAGE, default_timeout=120).run()
    assert not at.exception
    assert any(e.label.startswith("🤔 Predict first") for e in at.expander)
    assert len(at.get("vega_lite_chart")) >= 1 and _rule_charts(at) == 0


def test_lesson_links_carry_a_json_safe_state():
    # a guess is session state only: it never leaks into the shareable URL
    at = AppTest.from_file(ID_PAGE, default_timeout=120)
    at.session_state["guess_id_dims"] = 30.0
    at.run()
    assert _rule_charts(at) == 1
    assert "guess_id_dims" not in json.dumps(at.query_params)
