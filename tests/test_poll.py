"""The class poll on real databases: concurrent students, access rules, expiry.

Every test that takes ``db`` runs twice, each time in a fresh database: on a SQLite file in WAL
mode (the default) and on a real PostgreSQL server (the hosted case; see
``tests/poll_db_support.py`` for where the server comes from and when its cases skip).
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from app import poll
from tests.poll_db_support import BACKENDS, poll_database, postgres_server


class Clock:
    """An injectable clock (seconds)."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="session")
def pg_server():
    """The URL of this session's PostgreSQL server (skips, saying why, if none can start)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    """A fresh poll database on each backend, opened by the app's own ``engine_from_env``."""
    with poll_database(request.param, tmp_path, request) as url:
        engine = poll.engine_from_env({"STAGESCOPE_POLL_URL": url})
        assert engine.dialect.name == request.param
        try:
            yield engine
        finally:
            engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path):
    db = poll.engine_from_env({"STAGESCOPE_POLL_DB": str(tmp_path / "poll.sqlite")})
    with db.connect() as con:
        assert con.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (tmp_path / "poll.sqlite").exists()


def test_url_from_env_wins(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    assert poll.default_url({"STAGESCOPE_POLL_URL": url, "STAGESCOPE_POLL_DB": "x"}) == url
    assert poll.default_url({"STAGESCOPE_POLL_DB": str(tmp_path / "a.db")}).endswith("a.db")


def test_thirty_students_at_once(db):
    p = poll.Poll(db)
    a, b = p.open_class(), p.open_class()
    assert a.code != b.code and len(a.code) == poll.CODE_LEN
    rng = random.Random(0)
    ks = [rng.randint(0, 20) for _ in range(30)]  # answers k / 20 fall in bin min(k // 2, 9)
    sent = {a.code: [k / 20 for k in ks], b.code: [0.05] * 30}
    errors: list[BaseException] = []
    start = threading.Barrier(60)

    def student(code: str, value: float) -> None:
        try:
            token = poll.new_token()
            start.wait()
            p.submit(code.lower(), token, "lens_answer", 0.0)  # a first guess ...
            p.submit(code, token, "lens_answer", value)  # ... revised: stored once
            assert p.my_answer(code, token, "lens_answer") == value
        except BaseException as err:  # collected and re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=student, args=(c, v)) for c in sent for v in sent[c]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for cls in (a, b):
        got = p.answers(cls.code, cls.teacher_token, "lens_answer")
        assert len(got) == 30  # every student once, the revision replaced the first guess
        assert Counter(got) == Counter(sent[cls.code])  # only this class's answers
        bins = poll.histogram(got, 0.0, 1.0, bins=10)
        assert sum(b["count"] for b in bins) == 30
        expected = Counter(min(round(v * 20) // 2, 9) for v in sent[cls.code])
        assert [b["count"] for b in bins] == [expected.get(i, 0) for i in range(10)]
        assert p.questions(cls.code, cls.teacher_token) == {"lens_answer": 30}
    with db.connect() as con:
        assert con.execute(sa.select(sa.func.count()).select_from(poll.answers_t)).scalar() == 60


def test_no_cross_class_reads(db):
    p = poll.Poll(db)
    a, b = p.open_class(), p.open_class()
    student = poll.new_token()
    p.submit(a.code, student, "q", 3.0)
    with pytest.raises(poll.PollError, match="Only the teacher"):
        p.answers(a.code, b.teacher_token, "q")  # B's teacher cannot read A
    with pytest.raises(poll.PollError, match="Only the teacher"):
        p.answers(a.code, student, "q")  # nor can a student
    with pytest.raises(poll.PollError, match="Only the teacher"):
        p.questions(a.code, "")
    assert p.answers(b.code, b.teacher_token, "q") == []
    assert p.my_answer(b.code, student, "q") is None  # a's answer is not visible through b
    p.submit(b.code, student, "q", 5.0)  # the same student in another class: separate answer
    assert p.answers(a.code, a.teacher_token, "q") == [3.0]
    assert p.answers(b.code, b.teacher_token, "q") == [5.0]


def test_tabs_of_one_student_race_to_one_answer(db):
    """Ten tabs of one student send at once: the unique key keeps one answer, one of those sent."""
    p = poll.Poll(db)
    cls = p.open_class()
    token = poll.new_token()
    sent = [i / 10 for i in range(10)]
    start = threading.Barrier(len(sent))
    errors: list[BaseException] = []

    def tab(value: float) -> None:
        try:
            start.wait()
            p.submit(cls.code, token, "q", value)
        except BaseException as err:  # collected and re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=tab, args=(v,)) for v in sent]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    got = p.answers(cls.code, cls.teacher_token, "q")
    assert len(got) == 1 and got[0] in sent
    assert p.my_answer(cls.code, token, "q") == got[0]
    row = dict(code=cls.code, question="q", student_hash=poll._hash(token))
    with pytest.raises(sa.exc.IntegrityError), db.begin() as con:  # the database refuses a 2nd
        con.execute(poll.answers_t.insert().values(**row, value=9.0, updated_at=0.0))


def test_long_or_odd_codes_are_just_unknown(db):
    """A code longer than the column (PostgreSQL checks lengths, SQLite does not) is no class."""
    p = poll.Poll(db)
    cls = p.open_class()
    for typed in ("ABCDEFGHJKMN", "ab-cd ef", "é" * 12, ""):
        assert not p.is_open(typed)
        with pytest.raises(poll.PollError, match="No class"):
            p.submit(typed, poll.new_token(), "q", 1.0)
    with pytest.raises(poll.PollError):
        p.submit(cls.code, poll.new_token(), "q" * (poll.MAX_QUESTION_LEN + 1), 1.0)
    assert p.is_open(f" {cls.code[:3].lower()}-{cls.code[3:]} ")


def test_codes_expire(db):
    clock = Clock()
    p = poll.Poll(db, clock=clock, hours=1.0)
    cls = p.open_class(lesson="four_stages")
    student = poll.new_token()
    assert p.is_open(cls.code)
    p.submit(cls.code, student, "q", 1.0)
    clock.t += 3599
    p.submit(cls.code, student, "q", 2.0)
    clock.t += 2
    assert not p.is_open(cls.code)
    with pytest.raises(poll.PollError, match="ended"):
        p.submit(cls.code, student, "q", 9.0)
    assert p.answers(cls.code, cls.teacher_token, "q") == [2.0]  # the teacher can still look
    clock.t += 8 * 86400
    assert p.purge_expired(keep_days=7) == 1
    with pytest.raises(poll.PollError):
        p.answers(cls.code, cls.teacher_token, "q")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_bad_answers_refused(db, value):
    p = poll.Poll(db)
    cls = p.open_class()
    with pytest.raises(poll.PollError):
        p.submit(cls.code, poll.new_token(), "q", value)
    with pytest.raises(poll.PollError, match="No class"):
        p.submit("ZZZZZZ", poll.new_token(), "q", 1.0)
    with pytest.raises(poll.PollError):
        p.submit(cls.code, "", "q", 1.0)


def test_qr_code_is_a_png():
    png = poll.qr_png("http://localhost:8501/classroom?join=ABC234")
    assert png is not None and png.startswith(b"\x89PNG")


def test_classroom_page_teacher_and_student(monkeypatch, db):
    """The page's teacher view shows the class's guesses; a student joins by the QR link."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STAGESCOPE_POLL_URL", db.url.render_as_string(hide_password=False))
    assert poll.engine_from_env() is db  # the page's poll is this database
    router = str(Path(__file__).resolve().parent.parent / "app" / "streamlit_app.py")
    teacher = AppTest.from_file(router, default_timeout=120).run()
    teacher.switch_page("../pages/60_classroom.py").run()
    assert not teacher.exception, [e.value for e in teacher.exception]
    teacher.button(key="cls_open").click().run()
    cls = teacher.session_state["teacher_class"]
    assert len(teacher.get("image")) == 1  # the QR code of the join link
    assert any("No guesses yet" in i.value for i in teacher.info)

    student = AppTest.from_file(router, default_timeout=120).run()
    student.query_params["join"] = cls.code.lower()  # as the QR link opens it
    student.switch_page("../pages/60_classroom.py").run()
    assert not student.exception, [e.value for e in student.exception]
    assert student.session_state["class_code"] == cls.code
    token = student.session_state["student_token"]

    p = poll.Poll(poll.engine_from_env())
    p.submit(cls.code, token, "delete_hurts", 0.1)
    for v in (0.5, 0.55, 0.9):
        p.submit(cls.code, poll.new_token(), "delete_hurts", v)
    teacher.run()
    assert not teacher.exception
    charts = teacher.get("vega_lite_chart")
    from app.predict import QUESTIONS

    assert len(charts) == 1 and QUESTIONS["delete_hurts"].text[:40] in charts[0].proto.spec
    assert any("4 student(s) answered" in c.value for c in teacher.caption)

    wrong = AppTest.from_file(router, default_timeout=120).run()
    wrong.switch_page("../pages/60_classroom.py").run()
    wrong.text_input(key="join").set_value("NOPE22").run()
    assert "class_code" not in wrong.session_state
    assert any("No open class" in w.value for w in wrong.warning)
