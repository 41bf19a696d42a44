"""Glossary.

The words on these pages, the papers they reproduce, and what each seed question asks.
"""

import pandas as pd
import streamlit as st

from app import glossary, ui


def main() -> None:
    """Render the glossary: terms, papers, seeds."""
    ui.page_header(
        "Glossary",
        "What does this word mean, and which paper is it from?",
        [],
    )
    st.subheader("Words")
    query = st.text_input("Find a word", key="gl_find", bind="query-params")
    terms = pd.DataFrame(glossary.TERMS, columns=["word", "meaning"])
    if query:
        hit = terms["word"].str.contains(query, case=False, regex=False) | terms[
            "meaning"
        ].str.contains(query, case=False, regex=False)
        terms = terms[hit]
    for row in terms.itertuples():
        st.markdown(f"**{row.word}** — {row.meaning}")
    if terms.empty:
        st.info("No word matches; try a shorter part of it.")
    st.subheader("Papers")
    for name, title, url in glossary.PAPERS:
        st.markdown(f"- **{name}**: [{title}]({url})")
    st.subheader("Code and documents the pages name")
    for name, meaning in glossary.CODE:
        st.markdown(f"**{name}** — {meaning}")
    st.subheader("The seed questions")
    st.markdown(
        "The app grew from a few documents, numbered *seeds*. Where a page says "
        '"seed 000", the claim or figure comes from that document.'
    )
    st.dataframe(
        pd.DataFrame(glossary.SEEDS, columns=["seed", "document", "questions it asks"]),
        hide_index=True,
        width="stretch",
        column_config={"questions it asks": st.column_config.TextColumn(width="large")},
    )


main()
