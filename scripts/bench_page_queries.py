"""Time the queries each data page runs on the embedded results (caches cleared each time).

Usage: PYTHONPATH=. python scripts/bench_page_queries.py   -> prints JSON figures (milliseconds).
"""

from __future__ import annotations

import json
import logging
import statistics
import time

import streamlit as st

logging.getLogger("streamlit").setLevel(logging.ERROR)


def timed(fn, repeats: int = 7) -> float:
    """Median milliseconds of ``fn`` with Streamlit's caches cleared before every call."""
    times = []
    for _ in range(repeats):
        st.cache_data.clear()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    """Print per-page query times."""
    from app import data
    from app.lens_views import curve_frame, heatmap_frame, topk_cell

    data.connection()  # open once, as the app does
    models = data.models_for("logit_lens")
    model = models[0]
    pid = "ex-eiffel"

    def home():
        data.health()
        data.models_table()
        data.query("SELECT method, count(DISTINCT model) AS models FROM runs GROUP BY ALL")

    def lens():
        data.health()
        ms = data.models_for("logit_lens")
        curve_frame("kl_to_final", ms)
        data.models_for("logit_lens", "lens_topk")
        data.query(
            "SELECT prompt_id, text FROM prompts WHERE model = ? AND dataset = 'examples'", [model]
        )
        heatmap_frame(model, pid, "top1_prob")
        topk_cell(model, pid, 10, 3)
        data.runs_for("logit_lens", ms)

    print(json.dumps({"home_ms": round(timed(home), 1), "logit_lens_ms": round(timed(lens), 1)}))


if __name__ == "__main__":
    main()
