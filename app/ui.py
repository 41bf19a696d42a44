"""Small page helpers shared by every page.

Header, badges, sample sizes, computed findings, provenance, CSV download, notices, and the fact
pages' prompt box and subject picker.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import streamlit as st

from app import claims_views, data


def page_header(title: str, question: str, citations: list[tuple[str, str]]) -> None:
    """Title, the question the page answers, and the papers it reproduces (with links)."""
    st.title(title)
    st.markdown(f"> **{question}**")
    if citations:
        st.caption("Reproduces: " + " · ".join(f"[{name}]({url})" for name, url in citations))
    notice = data.source().notice
    if notice:
        st.warning(notice, icon="⚠️")
    problem = data.health()
    if problem:
        st.error(problem, icon="🚫")
        st.stop()


def badge(kind: str) -> None:
    """Say whether the student sees precomputed (published) or live results."""
    if kind == "live":
        st.badge("live: computed now on your prompt", icon="⚡", color="orange")
    else:
        st.badge(f"precomputed: {data.source().label} results", icon="📦", color="blue")


def download(df: pd.DataFrame, name: str, key: str | None = None) -> None:
    """A CSV download button for a chart's data (a live result's model and prompt included)."""
    inputs = {k: v for k, v in df.attrs.get("inputs", {}).items() if k not in df.columns}
    df = df.assign(**inputs) if inputs else df
    st.download_button(
        f"Download data (CSV, {len(df):,} rows)",
        df.to_csv(index=False).encode(),
        file_name=f"{name}.csv",
        mime="text/csv",
        key=key or f"dl-{name}",
    )


def provenance(method: str | list[str], models: list[str] | None = None, extra: str = "") -> None:
    """A "how this was computed" expander listing every run (of some methods) behind a chart."""
    methods = [method] if isinstance(method, str) else list(method)
    with st.expander("How this was computed"):
        if extra:
            st.markdown(extra)
        runs = pd.concat([data.runs_for(m, models) for m in methods], ignore_index=True)
        if runs.empty:
            st.write("No runs recorded.")
            return
        rows = []
        for r in runs.itertuples():
            prov = json.loads(r.provenance_json)
            rows.append(
                {
                    "method": r.method,
                    "model": r.model,
                    "dataset": r.dataset,
                    "items": r.n_items,
                    "weights": prov.get("quantization") or prov.get("source"),
                    "dtype": prov.get("dtype"),
                    "start token": (prov.get("start_token") or {}).get("text", "model default"),
                    "device": prov.get("device"),
                    "config": r.config_json,
                    "code": r.code_version,
                    "torch / transformers / TL": (
                        f"{prov.get('torch')} / {prov.get('transformers')} / "
                        f"{prov.get('transformer_lens')}"
                    ),
                    "dataset sha256": r.dataset_sha256[:12],
                    "finished": r.finished_at,
                }
            )
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def no_results(method: str) -> None:
    """Tell the student that the loaded results lack a method, and how to add it."""
    st.info(
        f"The loaded results have no `{method}` runs yet. An instructor adds them with "
        f"`python -m precompute run --model NAME --methods {method}` and "
        "`python -m precompute build`."
    )


def sample_caption(df: pd.DataFrame, unit: str, extra: str = "") -> None:
    """State a chart's n (from the ``n`` column of ``metrics_agg``) under it."""
    text = claims_views.sample_size(df, unit)
    if text:
        st.caption(text + (f" {extra}" if extra else ""))


def findings(text: str, label: str = "What these results show") -> None:
    """The sentence a page computes from its chart's data (``app.claims_views``)."""
    if text:
        st.markdown(f"**{label}.** {text}")


def prompt_words(prompt: str) -> list[tuple[str, int, int]]:
    """Split a prompt into words with their character spans (for picking the subject)."""
    return [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", prompt)]


def word_span(prompt: str, picked: list[int]) -> tuple[int, int] | None:
    """Character span from the first to the last picked word, trailing punctuation dropped."""
    words = prompt_words(prompt)
    picked = sorted(i for i in picked if 0 <= i < len(words))
    if not picked:
        return None
    start, end = words[picked[0]][1], words[picked[-1]][2]
    while end > start and prompt[end - 1] in ",.;:!?\"'":
        end -= 1
    return (start, end) if end > start else None


FACT_PROMPT_CHARS = 200


def fact_prompt(key: str, **_bind) -> str:
    """The fact-prompt box of the live fact panels (pages 30 and 31), mirrored in the URL."""
    from app import live_panel

    return live_panel.prompt_box(
        "Prompt (the answer should be the next word)",
        value="The Eiffel Tower is located in the city of",
        key=key,
        limit=FACT_PROMPT_CHARS,
        area=False,
    )


def subject_picker(prompt: str, **kw) -> tuple[int, int] | None:
    """Pick the subject's words of a fact prompt; return its character span (None: none picked).

    Pages 30 and 31 share it, so both methods mark the same tokens for the same pick: the span
    goes to the method, which maps it to tokens with ``precompute.facts``. Pass ``key`` and
    ``bind="query-params"`` as keywords (the lessons read them from the page).
    """
    words = prompt_words(prompt)
    picked = st.pills(
        "Subject: pick its words",
        list(range(len(words))),
        selection_mode="multi",
        default=[1, 2] if len(words) > 2 else None,
        format_func=lambda i: words[i][0],
        **kw,
    )
    span = word_span(prompt, picked or [])
    st.caption(f"Subject: **{prompt[span[0] : span[1]] if span else '—'}**")
    return span


def before_after(before: pd.DataFrame, after: pd.DataFrame, left: str, right: str) -> None:
    """Two top-k next-token tables side by side (``rank, token, prob``)."""
    prob = st.column_config.ProgressColumn(
        "probability", format="%.3f", min_value=0.0, max_value=1.0
    )
    for col, name, df in zip(st.columns(2), (left, right), (before, after)):
        col.markdown(f"Next token, **{name}**")
        col.dataframe(df, hide_index=True, width="stretch", column_config={"prob": prob})


def choice(where, label: str, options: list, labels: dict | None = None, **kw):
    """A select box whose options are shown through ``labels``; ``where``: st or a column.

    Pass ``key=..., bind="query-params"`` as keywords, so the lessons see the bound key.
    """
    return where.selectbox(label, options, format_func=lambda o: (labels or {}).get(o, o), **kw)
