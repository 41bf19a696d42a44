"""Stagescope precompute: the library behind the results.

Model catalog and loaders, one module per method, datasets, the results schema and store, the CLI
and publishing. Never imports Streamlit.
"""
