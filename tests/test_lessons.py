"""Lessons: the files validate, and a full lesson run through the app opens every step as stated."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from app import lessons

ROOT = Path(__file__).resolve().parent.parent
ROUTER = str(ROOT / "app" / "streamlit_app.py")
LESSON_FILES = sorted((ROOT / "data" / "lessons").glob("*.toml"))
TITLES = {
    "four_stages": "The four stages in 20 minutes",
    "facts": "Where do facts live?",
    "lenses": "Lenses as instruments",
}


def test_the_three_lessons_ship():
    found = {p.stem: lessons.load(p) for p in LESSON_FILES}
    assert {k: v.title for k, v in found.items() if k in TITLES} == TITLES


@pytest.mark.parametrize("path", LESSON_FILES, ids=lambda p: p.stem)
def test_lesson_file_is_valid(path):
    lesson = lessons.load(path)  # raises LessonError on an unknown page or unbound widget key
    assert len(lesson.steps) >= 3
    for k, step in enumerate(lesson.steps, start=1):
        assert step.note and step.question
        link = urlsplit(lessons.step_link(lesson, k))
        assert link.path == f"/{step.page}"
        qs = parse_qs(link.query)
        assert qs["lesson"] == [lesson.id] and qs["step"] == [str(k)]
        for key, value in step.query_params().items():
            assert qs[key] == (value if isinstance(value, list) else [value])


def test_bad_lessons_are_refused():
    ok = '[[steps]]\npage = "logit_lens"\ntitle = "t"\nnote = "n"\nquestion = "q"\n'
    head = 'title = "T"\naudience = "A"\n'
    assert lessons.parse(head + ok, "x").steps[0].page == "logit_lens"
    with pytest.raises(lessons.LessonError, match="no page"):
        lessons.parse(head + ok.replace("logit_lens", "nowhere"), "x")
    with pytest.raises(lessons.LessonError, match="not URL-bound"):
        lessons.parse(head + ok + "[steps.params]\nnot_a_widget = 1\n", "x")
    with pytest.raises(lessons.LessonError, match="'question'"):
        lessons.parse(head + ok.replace('question = "q"', ""), "x")
    with pytest.raises(lessons.LessonError, match="TOML"):
        lessons.parse("title = ", "x")


def _follow(at: AppTest, label: str) -> AppTest:
    """Follow a lesson-bar page link as the browser does: its page, with its query string."""
    link = next(pl for pl in at.get("page_link") if pl.proto.label.startswith(label))
    assert not link.proto.disabled, f"{label} is disabled"
    target = lessons.pages()[link.proto.page or "home"]
    at.query_params.clear()
    for key, values in parse_qs(link.proto.query_string).items():
        at.query_params[key] = values[0] if len(values) == 1 else values
    return at.switch_page(f"../pages/{target.name}").run()  # relative to app/streamlit_app.py


def _disabled(at: AppTest, label: str) -> bool:
    return next(pl for pl in at.get("page_link") if pl.proto.label.startswith(label)).proto.disabled


def _qp(at: AppTest, key: str) -> list[str]:
    value = at.query_params.get(key)
    return value if isinstance(value, list) else [value]


def _assert_step(at: AppTest, lesson: lessons.Lesson, k: int) -> None:
    """The page of step k ran without error, in the state the lesson file states."""
    step = lesson.steps[k - 1]
    assert not at.exception, [e.value for e in at.exception]
    assert _qp(at, "lesson") == [lesson.id] and _qp(at, "step") == [str(k)]
    doc_title = lessons.pages()[step.page].read_text().split('"""')[1].strip().splitlines()[0]
    assert at.title, f"step {k}: no title"
    if step.page != "home":  # the home page's header is the app's name
        assert doc_title.lower().rstrip(".?") in at.title[0].value.lower(), (k, at.title[0].value)
    assert not any("You left" in c.value for c in at.caption), f"step {k}: not on {step.page}"
    bar = " ".join(m.value for m in at.markdown)
    assert f"step **{k} of {len(lesson.steps)}**" in bar
    assert step.question in bar
    for key, value in step.query_params().items():
        # Streamlit drops a URL value that no widget accepts: kept means the widget took it.
        assert _qp(at, key) == (value if isinstance(value, list) else [value]), (
            f"step {k}: Streamlit dropped {key}={value!r} from the URL: it is not an option as "
            "the widget displays it (a format_func label), or it is the widget's default"
        )
        assert key in at.session_state, f"step {k}: no widget {key!r} on {step.page}"


def test_full_lesson_every_step_opens_its_page_in_the_stated_state(monkeypatch):
    monkeypatch.setenv("STAGESCOPE_LIVE_MODELS", "tiny-gpt2")
    lesson = lessons.load(ROOT / "data" / "lessons" / "four_stages.toml")
    at = AppTest.from_file(ROUTER, default_timeout=180)
    at.query_params.update({"lesson": lesson.id, "step": "1"})
    at.run()
    if lesson.steps[0].page != "home":
        _follow(at, "Back to step")
    _assert_step(at, lesson, 1)
    assert _disabled(at, "← Back")
    for k in range(2, len(lesson.steps) + 1):
        _follow(at, "Next")
        _assert_step(at, lesson, k)
    assert _disabled(at, "Next")
    _follow(at, "← Back")
    _assert_step(at, lesson, len(lesson.steps) - 1)
    at.toggle(key="lesson_projector").set_value(True).run()
    assert any("font-size: 22px" in h.proto.body for h in at.get("html"))
    _follow(at, "Next")
    assert _qp(at, "projector") == ["1"]  # projector mode travels with the link
    assert any("font-size: 22px" in h.proto.body for h in at.get("html"))
    at.button(key="lesson_leave").click().run()
    assert "lesson" not in at.query_params and "projector" not in at.query_params
    assert not at.get("page_link") or not any(
        pl.proto.label.startswith("Next") for pl in at.get("page_link")
    )
    assert all("font-size" not in h.proto.body for h in at.get("html"))


@pytest.mark.parametrize("lesson_id", ["facts", "lenses"])
def test_other_lessons_each_step_opens_in_state(lesson_id, monkeypatch):
    """Every step opened from its shareable link (the URL alone) lands in the stated state."""
    monkeypatch.setenv("STAGESCOPE_LIVE_MODELS", "tiny-gpt2")
    lesson = lessons.load(ROOT / "data" / "lessons" / f"{lesson_id}.toml")
    for k in range(1, len(lesson.steps) + 1):
        at = AppTest.from_file(ROUTER, default_timeout=180)
        at.query_params.update({"lesson": lesson.id, "step": str(k)})
        at.run()  # lands on the home page with the lesson bar; "back to step" opens the step
        if lesson.steps[k - 1].page != "home":
            _follow(at, "Back to step")
        _assert_step(at, lesson, k)
