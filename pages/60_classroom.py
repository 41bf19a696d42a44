"""Classroom.

Guided lessons, a class code for the poll, and the class's guesses live against the data.
"""

import streamlit as st
from streamlit.errors import StreamlitAPIException

from app import lessons, poll, predict, ui
from app.predict import QUESTIONS, get_poll


def lesson_picker() -> None:
    """Every lesson: what it is for, and a button (and a link) that opens its first step."""
    st.subheader("Lessons")
    projector = st.toggle("Open in projector mode (larger type, no sidebar)", key="cls_projector")
    for lesson in lessons.load_all().values():
        with st.container(border=True):
            st.markdown(f"**{lesson.title}** · {lesson.minutes} min · {lesson.audience}")
            st.caption(lesson.summary)
            steps = " → ".join(s.title for s in lesson.steps)
            st.markdown(f"{len(lesson.steps)} steps: {steps}")
            c1, c2 = st.columns([1, 3], vertical_alignment="center")
            if c1.button("Start", key=f"start_{lesson.id}", type="primary"):
                lessons.go(lesson, 1, projector)
            c2.code(lessons.step_link(lesson, 1, projector), language=None)


def teacher() -> None:
    """Open a class: the code (and QR code) for the students, then their guesses, live."""
    st.subheader("Teacher: open a class poll")
    have = st.session_state.get("teacher_class")
    if have is None:
        names = {"": "no lesson", **{k: v.title for k, v in lessons.load_all().items()}}
        lesson = st.selectbox("For the lesson", list(names), format_func=names.get, key="cls_l")
        if st.button("Open a class", type="primary", key="cls_open"):
            st.session_state["teacher_class"] = get_poll().open_class(lesson)
            st.rerun()
        st.caption(
            f"A code stays open {poll.CLASS_HOURS:g} h. Students need no account; no names are "
            "stored, only their guesses. Only this browser session can see the answers."
        )
        return
    code = have.code
    join = f"{(st.context.url or '').split('?')[0].rsplit('/', 1)[0]}/classroom?join={code}"
    c1, c2 = st.columns([2, 1])
    c1.markdown(f"Class code: <span style='font-size:3rem;font-weight:700'>{code}</span>", True)
    c1.markdown(f"Students open **{join}** or scan the QR code, or type the code below.")
    png = poll.qr_png(join)
    if png:
        c2.image(png, width=180, caption="Join link")
    if st.button("Close this class view", key="cls_close"):
        del st.session_state["teacher_class"]
        st.rerun()
    live_results(code, have.teacher_token)


@st.fragment(run_every=3)
def live_results(code: str, token: str) -> None:
    """The class's guesses per question, against the answer in the data (refreshes every 3 s)."""
    try:
        counts = get_poll().questions(code, token)
    except poll.PollError as err:
        st.warning(str(err))
        return
    if not counts:
        st.info("No guesses yet: they appear here as students reveal the charts.")
        return
    for key, n in counts.items():
        if key not in QUESTIONS:
            continue
        values = get_poll().answers(code, token, key)
        st.altair_chart(predict.class_chart(key, values), width="stretch")
        st.caption(f"{n} student(s) answered; dashed lines: the answer on the page's default view.")


def student() -> None:
    """Join a class by its code; guesses on the pages are then sent to it."""
    st.subheader("Student: join a class")
    typed = st.text_input("Class code", key="join", max_chars=12, bind="query-params")
    code = poll.normalise_code(typed)
    if code and code != st.session_state.get("class_code"):
        if get_poll().is_open(code):
            st.session_state["class_code"] = code
            st.session_state.setdefault("student_token", poll.new_token())
        else:
            st.warning(f"No open class has the code {code}: check it with your teacher.")
    joined = st.session_state.get("class_code")
    if not joined:
        return
    st.success(f"You are in class **{joined}**. Your guesses are sent anonymously.")
    st.markdown("Questions to answer (each page asks before it shows its chart):")
    pages = lessons.pages()
    for q in QUESTIONS.values():
        label = q.text.split("?")[0] + "?"
        try:  # keeps this session (and its class code) when the page runs under the router
            st.page_link(str(pages[q.page]), label=label, icon="🤔")
        except StreamlitAPIException:  # the page run on its own (no navigation)
            st.markdown(f"- 🤔 {label} (page *{q.page}*)")
    if st.button("Leave the class", key="cls_leave"):
        del st.session_state["class_code"]
        st.rerun()


def main() -> None:
    """Render the page."""
    ui.page_header(
        "Classroom",
        "Guide a class through the pages, let everyone guess before the evidence appears, and "
        "see the class's guesses against the data.",
        [],
    )
    t1, t2, t3 = st.tabs(["Lessons", "Teacher", "Student"])
    with t1:
        lesson_picker()
    with t2:
        teacher()
    with t3:
        student()


main()
