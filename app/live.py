"""The live model service: one small model per process, shared by every session, with limits.

The model is loaded once (``st.cache_resource``) and never mutated by a page: every forward pass
goes through the method functions of ``precompute``, which hold the model's lock around their
hooks, so hooks added for one session never touch another's pass. TransformerLens is imported
lazily (it takes seconds).

Live work is bounded (issue 12). :func:`run` admits requests through a process-wide gate:

* at most ``live_slots`` requests compute at once; the others wait in a FIFO queue of at most
  ``live_queue`` places and see their position ("2 students ahead of you"); a full queue says
  "busy, try again" at once;
* each request has a time limit: a global forward pre-hook checks the calling thread's deadline
  before every module's forward pass and stops the request there, with a message saying so;
* one request per session: a new one from the same browser tab cancels the previous one;
* a model that failed to load fails fast (one line) for a minute before it is tried again;
* a request computes on :data:`LIVE_THREADS` intra-op thread: a live prompt's operations are too
  small to split, and split ones wait at a barrier per operation whenever the machine is busy
  (``precompute.model.threads``; ``bench live-panels``: delete/swap 5.3 s -> 0.3 s, knockout
  14 s -> 0.9 s, RSA 6.2 s -> 1.1 s on a loaded 2-core machine). The logit lens still spreads
  its read-out over the process's cores (``map_threads``).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from app.config import AppConfig

T = TypeVar("T")
#: Intra-op threads of one live request.
LIVE_THREADS = 1


class PromptError(ValueError):
    """A prompt the live panel cannot run; the message says what to change."""


class LiveBusy(PromptError):
    """The live queue is full."""


class LiveTimeout(PromptError):
    """The request ran past its time limit and was stopped."""


class LiveUnavailable(PromptError):
    """The live model cannot be loaded here (offline, unknown, broken)."""


def config() -> AppConfig:
    """This process's app settings."""
    return AppConfig.from_env()


# ----------------------------------------------------------------------------------- the gate


class _Stop(BaseException):
    """Raised inside a forward pass to stop a request (a BaseException: no handler eats it)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _Ticket:
    def __init__(self, number: int, session: str, heavy: bool = False) -> None:
        self.number = number
        self.session = session
        self.heavy = heavy
        self.cancelled = False
        self.deadline = float("inf")


class Gate:
    """FIFO admission: ``slots`` running, at most ``max_waiting`` queued (position visible).

    Heavy requests (long traces) take at most ``slots - 1`` slots, so a short request (a lens)
    is never stuck behind them: it passes waiting heavy requests when only the kept slot is free.
    """

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots = max(1, slots)
        self.max_waiting = max(0, max_waiting)
        self._cond = threading.Condition()
        self._queue: collections.deque[_Ticket] = collections.deque()
        self._running: set[_Ticket] = set()
        self._by_session: dict[str, _Ticket] = {}
        self._numbers = itertools.count()

    def enter(self, session: str, heavy: bool = False) -> _Ticket:
        """Take a ticket; cancels the session's previous request.

        Raises:
            LiveBusy: The queue is full.
        """
        with self._cond:
            old = self._by_session.get(session)
            if old is not None:
                old.cancelled = True  # the student asked again: the old request stops
                if old in self._queue:
                    self._queue.remove(old)
                self._cond.notify_all()
            if len(self._queue) >= self.max_waiting and len(self._running) >= self.slots:
                raise LiveBusy(
                    f"The live model is busy ({len(self._running)} running, "
                    f"{len(self._queue)} waiting). Try again in a minute; the precomputed "
                    "charts above need no waiting."
                )
            ticket = _Ticket(next(self._numbers), session, heavy)
            self._queue.append(ticket)
            self._by_session[session] = ticket
            return ticket

    def position(self, ticket: _Ticket) -> int:
        """Students ahead of ``ticket``: those computing and those before it in the queue."""
        with self._cond:
            if ticket not in self._queue:
                return 0
            return self._queue.index(ticket) + len(self._running)

    def _fits(self, ticket: _Ticket) -> bool:
        if len(self._running) >= self.slots:
            return False
        heavy = sum(t.heavy for t in self._running)
        return not ticket.heavy or self.slots == 1 or heavy < self.slots - 1

    def _admit(self, ticket: _Ticket) -> bool:
        if ticket in self._running:
            return True
        if ticket not in self._queue or not self._fits(ticket):
            return False
        first_fit = next((t for t in self._queue if self._fits(t)), None)
        if first_fit is not ticket:  # someone ahead fits: FIFO among those that fit
            return False
        self._queue.remove(ticket)
        self._running.add(ticket)
        self._cond.notify_all()  # the next in line may fit in another free slot
        return True

    def wait(self, ticket: _Ticket, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True once ``ticket`` holds a slot."""
        with self._cond:
            if ticket.cancelled:
                return False
            if self._admit(ticket):
                return True
            self._cond.wait(timeout)
            return not ticket.cancelled and self._admit(ticket)

    def leave(self, ticket: _Ticket) -> None:
        """Give back the slot (or the place in the queue)."""
        with self._cond:
            self._running.discard(ticket)
            if ticket in self._queue:
                self._queue.remove(ticket)
            if self._by_session.get(ticket.session) is ticket:
                del self._by_session[ticket.session]
            self._cond.notify_all()

    def stats(self) -> dict[str, int]:
        """Running and waiting counts."""
        with self._cond:
            return {"running": len(self._running), "waiting": len(self._queue)}


_GATE: Gate | None = None
_GATE_LOCK = threading.Lock()
_CURRENT = threading.local()  # the ticket of the request this thread is computing
_HOOK_INSTALLED = False


def gate() -> Gate:
    """The process-wide gate (sized from the config on first use)."""
    global _GATE
    with _GATE_LOCK:
        if _GATE is None:
            cfg = config()
            _GATE = Gate(cfg.live_slots, cfg.live_queue)
        return _GATE


def _check_deadline(module: Any, args: Any) -> None:
    ticket = getattr(_CURRENT, "ticket", None)
    if ticket is None:
        return
    if ticket.cancelled:
        raise _Stop("cancelled")
    if time.monotonic() > ticket.deadline:
        raise _Stop("timeout")


def _install_hook() -> None:
    """A global forward pre-hook: every module checks the calling thread's deadline first."""
    global _HOOK_INSTALLED
    with _GATE_LOCK:
        if _HOOK_INSTALLED:
            return
        from torch.nn.modules.module import register_module_forward_pre_hook

        register_module_forward_pre_hook(_check_deadline)
        _HOOK_INSTALLED = True


def _run_ctx() -> Any:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        return get_script_run_ctx(suppress_warning=True)
    except Exception:  # outside a Streamlit run (tests, scripts)
        return None


def _in_streamlit() -> bool:
    return _run_ctx() is not None


def _session_id() -> str:
    ctx = _run_ctx()
    return ctx.session_id if ctx is not None else f"thread-{threading.get_ident()}"


def _show(placeholder: Any, ahead: int) -> None:
    if placeholder is None:
        return
    who = "1 student" if ahead == 1 else f"{ahead} students"
    placeholder.info(f"Waiting for the live model: {who} ahead of you ...")


def run(
    compute: Callable[[], T],
    limit_s: float | None = None,
    session: str | None = None,
    placeholder: Any = None,
    heavy: bool = False,
) -> T:
    """Run ``compute()`` through the gate, under a time limit.

    Args:
        compute: The live computation (it calls the precompute functions on a shared model).
        limit_s: Time limit in seconds; default ``config().live_time_limit_s`` (or
            ``live_heavy_time_limit_s`` for a heavy request).
        session: Who asks (default: the Streamlit session); one request per session.
        placeholder: Where to show the queue position (default: a new ``st.empty()`` inside
            a Streamlit run, nothing outside one).
        heavy: A long request (causal trace, patching sweep): it never takes the last slot.

    Returns:
        What ``compute`` returned.

    Raises:
        LiveBusy: The queue is full.
        LiveTimeout: The time limit passed (or a newer request of the session replaced it).
    """
    cfg = config()
    default = cfg.live_heavy_time_limit_s if heavy else cfg.live_time_limit_s
    limit = float(limit_s if limit_s is not None else default)
    g = gate()
    _install_hook()
    ticket = g.enter(session or _session_id(), heavy)
    shown = -1
    try:
        while not g.wait(ticket, 0.25):
            if ticket.cancelled:
                raise LiveTimeout("A newer request from this page replaced this one.")
            ahead = g.position(ticket)
            if ahead != shown:
                if placeholder is None and _in_streamlit():
                    placeholder = st.empty()
                _show(placeholder, ahead)
                shown = ahead
        if placeholder is not None and shown >= 0:
            placeholder.empty()
        ticket.deadline = time.monotonic() + limit
        _CURRENT.ticket = ticket
        from precompute.model.threads import intra_op_threads  # torch: lazily

        try:
            with intra_op_threads(LIVE_THREADS):  # one core per request (module docstring)
                return compute()
        except _Stop as stop:
            if stop.why == "cancelled":
                raise LiveTimeout("A newer request from this page replaced this one.") from None
            raise LiveTimeout(
                f"Stopped after the live time limit of {limit:g} s (other students share this "
                "model). Try a shorter prompt or fewer options; the precomputed charts cover "
                "the long cases."
            ) from None
        finally:
            _CURRENT.ticket = None
    finally:
        g.leave(ticket)


# ------------------------------------------------------------------------------ the model


_FAILED: dict[str, tuple[float, str]] = {}
#: Seconds a failed model load is reported from memory before it is tried again.
RETRY_FAILED_S = 60.0


@st.cache_resource(
    show_spinner="Loading the live model (first time only, ~30 s) ...", max_entries=2
)
def _load(name: str):
    from precompute.model.load import load_model

    return load_model(name, device="auto")


def get_model(name: str):
    """Load (once per process) and return a ``precompute.model.load.LoadedModel``.

    Raises:
        LiveUnavailable: The model cannot be loaded here; one line saying what to do. A failure
            is remembered for a minute, so the next request is answered at once.
    """
    failed = _FAILED.get(name)
    if failed and time.monotonic() - failed[0] < RETRY_FAILED_S:
        raise LiveUnavailable(failed[1])
    ticket = getattr(_CURRENT, "ticket", None)
    started = time.monotonic()
    saved = ticket.deadline if ticket is not None else 0.0
    if ticket is not None:
        ticket.deadline = float("inf")  # loading is not the student's computation
    try:
        lm = _load(name)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:240]
        others = ", ".join(m for m in config().live_models if m != name)
        msg = f"The live model {name!r} cannot be loaded here ({first})." + (
            f" Pick another live model ({others})." if others else ""
        )
        _FAILED[name] = (time.monotonic(), msg)
        raise LiveUnavailable(msg) from None
    finally:
        if ticket is not None:  # the limit restarts after a load
            ticket.deadline = saved + (time.monotonic() - started)
    _FAILED.pop(name, None)
    return lm


# ----------------------------------------------------------------------------- the inputs


def check_prompt(prompt: str, max_chars: int | None = None) -> str:
    """Validate a student's prompt; return it stripped of trailing whitespace.

    Raises:
        PromptError: Empty, or longer than the live limit.
    """
    limit = max_chars or config().max_prompt_chars
    text = (prompt or "").rstrip()
    if not text.strip():
        raise PromptError("Type a prompt first: the box is empty.")
    if len(text) > limit:
        raise PromptError(
            f"This prompt has {len(text):,} characters; the live panel takes at most {limit:,}. "
            "Shorten it (the precomputed pages cover long documents)."
        )
    return text


def check_count(items: list, what: str, limit: int | None = None) -> list:
    """Refuse lists longer than the live limit (sentences, subjects ...).

    Raises:
        PromptError: More than ``limit`` (default ``config().max_live_items``) entries.
    """
    limit = limit or config().max_live_items
    if len(items) > limit:
        raise PromptError(
            f"You entered {len(items)} {what}; the live panel takes at most {limit}. "
            "Remove some and run again."
        )
    return items


def model_picker(key: str = "live_model") -> str:
    """A select box of the live models, mirrored in the URL."""
    models = list(config().live_models)
    return st.selectbox("Live model", models, key=key, bind="query-params")
