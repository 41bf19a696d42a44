"""Small page helpers shared by every page: header, badges, provenance, CSV download, notices."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app import data


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
    """A CSV download button for a chart's data."""
    st.download_button(
        f"Download data (CSV, {len(df):,} rows)",
        df.to_csv(index=False).encode(),
        file_name=f"{name}.csv",
        mime="text/csv",
        key=key or f"dl-{name}",
    )


def provenance(method: str, models: list[str] | None = None, extra: str = "") -> None:
    """A "how this was computed" expander listing every run behind a chart."""
    with st.expander("How this was computed"):
        if extra:
            st.markdown(extra)
        runs = data.runs_for(method, models)
        if runs.empty:
            st.write("No runs recorded.")
            return
        rows = []
        for r in runs.itertuples():
            prov = json.loads(r.provenance_json)
            rows.append(
                {
                    "model": r.model,
                    "dataset": r.dataset,
                    "items": r.n_items,
                    "weights": prov.get("quantization") or prov.get("source"),
                    "dtype": prov.get("dtype"),
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
