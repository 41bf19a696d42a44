"""Stagescope app layer: configuration, data access, chart builders, live model service.

Only this package and ``pages/`` import Streamlit; ``precompute`` never does.
"""
