"""Every page renders with no exception (AppTest), on the embedded results and on bad results."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(p.name for p in (ROOT / "pages").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(page, monkeypatch):
    monkeypatch.setenv("STAGESCOPE_LIVE_MODELS", "tiny-gpt2")
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title, "every page opens with a title"


def test_router_lists_every_page():
    at = AppTest.from_file(str(ROOT / "app" / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title  # the default page (home) rendered


@pytest.mark.parametrize("page", ["00_home.py", "10_logit_lens.py"])
def test_missing_results_give_a_clear_message(page, monkeypatch, tmp_path):
    monkeypatch.setenv("STAGESCOPE_RESULTS_DIR", str(tmp_path / "nowhere"))
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=60).run()
    assert not at.exception
    assert any("cannot be read" in e.value for e in at.error)


def test_corrupt_results_give_a_clear_message(monkeypatch, tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "metrics.parquet").write_bytes(b"garbage")
    (tmp_path / "stagescope.duckdb").write_bytes(b"garbage too")
    monkeypatch.setenv("STAGESCOPE_RESULTS_DIR", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "pages" / "10_logit_lens.py"), default_timeout=60).run()
    assert not at.exception
    assert any("cannot be read" in e.value for e in at.error)


def _live_lens(monkeypatch, prompt):
    monkeypatch.setenv("STAGESCOPE_LIVE_MODELS", "tiny-gpt2")
    at = AppTest.from_file(str(ROOT / "pages" / "10_logit_lens.py"), default_timeout=120).run()
    at.text_area(key="live_prompt").set_value(prompt)
    at.button(key="live_lens_df_run").click()
    return at.run()


def test_live_lens_panel_runs_the_student_prompt(monkeypatch):
    at = _live_lens(monkeypatch, "the cat sat on the mat 🙂")
    assert not at.exception
    assert "live_lens_df" in at.session_state
    df = at.session_state["live_lens_df"]
    assert {"layer", "position", "token", "kl_to_final", "entropy", "top1_prob"} <= set(df.columns)


def test_live_lens_empty_prompt(monkeypatch):
    at = _live_lens(monkeypatch, "   ")
    assert not at.exception
    assert any("empty" in w.value for w in at.warning)


def test_live_lens_long_prompt_is_cut_not_crashed(monkeypatch):
    at = _live_lens(monkeypatch, "word " * 1000)  # the text box caps it at max_chars
    assert not at.exception


def test_check_prompt_refuses_overlong_text():
    from app.live import PromptError, check_prompt

    with pytest.raises(PromptError, match="at most 2,000"):
        check_prompt("x" * 5000, max_chars=2000)
