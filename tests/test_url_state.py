"""Link values and live-panel input, checked without a browser (AppTest on the logit-lens page)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "10_logit_lens.py")


def _page(**params) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def test_a_layer_beyond_the_depth_is_clamped_and_said():
    at = _page(layer="999")
    assert not at.exception
    slider = at.slider(key="layer")
    assert slider.value == slider.max
    assert any("layer 999" in i.value for i in at.info)


def test_an_unknown_position_is_reported_not_dropped():
    at = _page(position="abc")
    assert not at.exception
    assert any("position 'abc'" in i.value for i in at.info)
    sb = at.selectbox(key="position")
    assert sb.value == max(int(o.split(":")[0]) for o in sb.options)  # the last position


def test_a_long_paste_is_kept_and_answered(monkeypatch):
    monkeypatch.setenv("STAGESCOPE_LIVE_MODELS", "tiny-gpt2")
    at = _page()
    paste = "word " * 600
    at.text_area(key="live_prompt").set_value(paste)
    at.button(key="live_lens_df_run").click()
    at.run()
    assert not at.exception
    assert at.text_area(key="live_prompt").value == paste  # the box took all of it
    assert any("This prompt has 2,999 characters" in w.value for w in at.warning)
    assert "live_lens_df" not in at.session_state  # no stale result under the message
