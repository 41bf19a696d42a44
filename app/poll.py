"""The class poll: a teacher opens a class, students send their guesses, the teacher sees them.

The answers live in a real database shared by every session (and every replica) of the app:
SQLite in WAL mode by default, one file at ``STAGESCOPE_POLL_DB`` (default
``~/.cache/stagescope/poll.sqlite``), or any SQLAlchemy URL in ``STAGESCOPE_POLL_URL`` (e.g.
PostgreSQL when the app runs as several replicas). No accounts and no names: a class is a short
code plus a secret teacher token, a student is a random token held by their browser session.

Access rules, enforced here (not by the pages):

- a student writes only to the class whose code they typed, only while it is open, and only
  their own answer (one per question; sending again replaces it);
- only the holder of a class's teacher token reads its answers, and only that class's;
- codes expire (``CLASS_HOURS``); the clock is injectable for tests.

Example::

    from app import poll
    p = poll.Poll(poll.engine_from_env())
    cls = p.open_class()                       # teacher: cls.code, cls.teacher_token
    p.submit(cls.code, poll.new_token(), "lens_answer", 0.7)   # a student
    p.answers(cls.code, cls.teacher_token, "lens_answer")       # the teacher
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, ProgrammingError

#: Unambiguous characters (no 0/O, 1/I/L): a code is read aloud and typed on phones.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LEN = 6
CLASS_HOURS = 3.0
MAX_QUESTION_LEN = 64

metadata = sa.MetaData()
classes = sa.Table(
    "classes",
    metadata,
    sa.Column("code", sa.String(CODE_LEN), primary_key=True),
    sa.Column("teacher_hash", sa.String(64), nullable=False),
    sa.Column("lesson", sa.String(64), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
answers_t = sa.Table(
    "answers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("code", sa.String(CODE_LEN), sa.ForeignKey("classes.code"), nullable=False),
    sa.Column("question", sa.String(MAX_QUESTION_LEN), nullable=False),
    sa.Column("student_hash", sa.String(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("code", "question", "student_hash", name="one_answer_per_student"),
)


class PollError(ValueError):
    """A poll request that cannot be served; the message says what to do instead."""


@dataclass(frozen=True)
class ClassSession:
    """An open class: the code students type, and the secret the teacher's browser keeps."""

    code: str
    teacher_token: str
    expires_at: float


def new_token() -> str:
    """A random anonymous token (a student's or a teacher's), 128 bits."""
    return secrets.token_urlsafe(16)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_code(code: str) -> str:
    """Upper-case a typed code and drop spaces and dashes."""
    return "".join(ch for ch in (code or "").upper() if ch.isalnum())


def default_url(env: dict[str, str] | None = None) -> str:
    """The database URL: ``STAGESCOPE_POLL_URL``, else SQLite at ``STAGESCOPE_POLL_DB``."""
    env = dict(os.environ if env is None else env)
    if env.get("STAGESCOPE_POLL_URL", "").strip():
        return env["STAGESCOPE_POLL_URL"].strip()
    path = Path(
        env.get("STAGESCOPE_POLL_DB", "").strip()
        or Path.home() / ".cache" / "stagescope" / "poll.sqlite"
    ).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def make_engine(url: str) -> sa.Engine:
    """Create the engine; SQLite gets WAL mode and a busy timeout so concurrent writers queue."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_con, _record) -> None:
        dbapi_con.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_con.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(con) -> None:
        # Take the write lock up front: a deferred transaction that reads and then writes can
        # fail at once with "database is locked" when another writer got there first.
        con.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


_READY: weakref.WeakSet[sa.Engine] = weakref.WeakSet()  # engines whose tables exist


def create_tables(engine: sa.Engine) -> None:
    """Create the poll's tables if missing (once per engine; racing replicas: retry once)."""
    if engine in _READY:
        return
    try:
        metadata.create_all(engine)
    except (IntegrityError, ProgrammingError):  # another replica created them meanwhile
        metadata.create_all(engine)
    _READY.add(engine)


def engine_from_env(env: dict[str, str] | None = None) -> sa.Engine:
    """The engine of the configured database (tables created if missing).

    One engine (one connection pool) per URL and process: a page run, a fragment's refresh and
    a student's answer reuse its connections instead of connecting anew to a hosted database.
    """
    url = default_url(env)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = make_engine(url)
            create_tables(engine)
            _ENGINES[url] = engine
    return engine


class Poll:
    """Every read and write of the class poll goes through this object.

    Args:
        engine: A SQLAlchemy engine (tables are created if missing).
        clock: Seconds since the epoch (``time.time``; tests inject their own).
        hours: How long a class code stays open.
    """

    def __init__(
        self, engine: sa.Engine, clock: Callable[[], float] = time.time, hours: float = CLASS_HOURS
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.hours = hours
        create_tables(engine)

    def open_class(self, lesson: str = "") -> ClassSession:
        """Open a class with a fresh code; the returned teacher token is shown nowhere else."""
        token = new_token()
        now = self.clock()
        expires = now + self.hours * 3600
        for _ in range(20):  # 31^6 ≈ 887 million codes: a clash is rare, retry if it happens
            code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LEN))
            try:
                with self.engine.begin() as con:
                    con.execute(
                        classes.insert().values(
                            code=code,
                            teacher_hash=_hash(token),
                            lesson=lesson[:64],
                            created_at=now,
                            expires_at=expires,
                        )
                    )
                return ClassSession(code, token, expires)
            except IntegrityError:
                continue
        raise PollError("Could not find a free class code; try again.")

    def _open_row(self, con, code: str):
        row = con.execute(sa.select(classes).where(classes.c.code == code)).first()
        if row is None:
            raise PollError(f"No class has the code {code!r}: check it with your teacher.")
        if row.expires_at <= self.clock():
            raise PollError(f"The class {code} has ended (codes expire after {self.hours:g} h).")
        return row

    def is_open(self, code: str) -> bool:
        """Whether a code names an open class (what a student's join box checks)."""
        try:
            with self.engine.connect() as con:
                self._open_row(con, normalise_code(code))
        except PollError:
            return False
        return True

    def submit(self, code: str, student_token: str, question: str, value: float) -> None:
        """Store (or replace) one student's answer to one question of one open class.

        Raises:
            PollError: Unknown or expired code, an empty token, or a bad question or value.
        """
        code = normalise_code(code)
        if not student_token:
            raise PollError("A student token is needed.")
        if not question or len(question) > MAX_QUESTION_LEN:
            raise PollError("A question key of 1 to 64 characters is needed.")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise PollError("The answer must be a finite number.")
        who, now = _hash(student_token), self.clock()
        key = (
            (answers_t.c.code == code)
            & (answers_t.c.question == question)
            & (answers_t.c.student_hash == who)
        )
        for _ in range(3):  # two tabs of one student racing (hosted databases): retry
            try:
                with self.engine.begin() as con:
                    self._open_row(con, code)
                    done = con.execute(
                        answers_t.update().where(key).values(value=value, updated_at=now)
                    )
                    if not done.rowcount:
                        con.execute(
                            answers_t.insert().values(
                                code=code,
                                question=question,
                                student_hash=who,
                                value=value,
                                updated_at=now,
                            )
                        )
                return
            except IntegrityError:
                continue
        raise PollError("Could not store the answer; send it again.")

    def _check_teacher(self, con, code: str, teacher_token: str) -> None:
        row = con.execute(sa.select(classes).where(classes.c.code == code)).first()
        if row is None or not secrets.compare_digest(row.teacher_hash, _hash(teacher_token or "")):
            raise PollError("Only the teacher who opened this class can see its answers.")

    def answers(self, code: str, teacher_token: str, question: str) -> list[float]:
        """The class's answers to one question (one per student), for the teacher only.

        Raises:
            PollError: The token does not belong to this class.
        """
        code = normalise_code(code)
        with self.engine.connect() as con:
            self._check_teacher(con, code, teacher_token)
            rows = con.execute(
                sa.select(answers_t.c.value)
                .where((answers_t.c.code == code) & (answers_t.c.question == question))
                .order_by(answers_t.c.id)
            )
            return [float(r.value) for r in rows]

    def questions(self, code: str, teacher_token: str) -> dict[str, int]:
        """Questions answered so far in a class, with the number of students (teacher only)."""
        code = normalise_code(code)
        with self.engine.connect() as con:
            self._check_teacher(con, code, teacher_token)
            rows = con.execute(
                sa.select(answers_t.c.question, sa.func.count())
                .where(answers_t.c.code == code)
                .group_by(answers_t.c.question)
                .order_by(answers_t.c.question)
            )
            return {r[0]: int(r[1]) for r in rows}

    def my_answer(self, code: str, student_token: str, question: str) -> float | None:
        """A student's own answer (the only answer a student can read)."""
        with self.engine.connect() as con:
            row = con.execute(
                sa.select(answers_t.c.value).where(
                    (answers_t.c.code == normalise_code(code))
                    & (answers_t.c.question == question)
                    & (answers_t.c.student_hash == _hash(student_token))
                )
            ).first()
        return None if row is None else float(row.value)

    def purge_expired(self, keep_days: float = 7.0) -> int:
        """Delete classes (and their answers) that ended more than ``keep_days`` ago."""
        cutoff = self.clock() - keep_days * 86400
        with self.engine.begin() as con:
            old = sa.select(classes.c.code).where(classes.c.expires_at < cutoff)
            con.execute(answers_t.delete().where(answers_t.c.code.in_(old)))
            return con.execute(classes.delete().where(classes.c.expires_at < cutoff)).rowcount


def histogram(values: list[float], lo: float, hi: float, bins: int = 10) -> list[dict]:
    """Count answers in ``bins`` equal bins over [lo, hi] (values outside are clamped).

    Returns:
        One dict per bin: ``start``, ``end``, ``count`` (the counts sum to ``len(values)``).
    """
    span = hi - lo if hi > lo else 1.0
    width = span / bins
    counts = [0] * bins
    for v in values:  # 1e-9: a value on a bin edge (0.3 of 0..1) opens the next bin
        counts[min(max(int((v - lo) / span * bins + 1e-9), 0), bins - 1)] += 1
    return [
        {"start": lo + i * width, "end": lo + (i + 1) * width, "count": c}
        for i, c in enumerate(counts)
    ]


def qr_png(text: str, scale: int = 8) -> bytes | None:
    """A PNG QR code of ``text`` (segno, pure Python); ``None`` if segno is missing."""
    try:
        import segno
    except ImportError:
        return None
    import io

    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=scale, border=2)
    return buf.getvalue()
