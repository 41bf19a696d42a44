"""Chart builders: pure functions, DataFrame in, Altair chart out. No Streamlit here.

Every chart the app draws is built here, so every chart gets the same care: a title, axis titles
with units (wrapped, never cut), label limits, a minimum plot size, Okabe-Ito colours for series,
viridis for heatmaps with fixed domains so two heatmaps compare, line styles drawn in the legend,
token axes labelled "position: token" (whitespace made visible) and sorted by position.
``tests/test_charts.py`` checks the specs; ``tests/test_browser.py`` checks what the browser draws.
"""

from app.charts.base import (
    BYTE_TOKEN,
    DEPTH_TITLE,
    HEATMAP_SCHEME,
    LABEL_LIMIT,
    MIN_HEIGHT,
    MIN_WIDTH,
    OKABE_ITO,
    SERIES,
    finish,
    show_token,
    wrap,
)
from app.charts.depth import (
    STAGES,
    depth_lines,
    k_curves,
    knockout_chart,
    patching_chart,
    scaled_lines,
    stage_chart,
    symlog_ticks,
)
from app.charts.heat import (
    SIM_TITLE,
    matrix_heatmap,
    pattern_chart,
    rdm_heatmap,
    similarity_heatmap,
    token_heatmap,
    trace_heatmaps,
)
from app.charts.other import (
    guess_histogram,
    guess_rule,
    layer_bars,
    neuron_scatter,
    stacked_shares,
)

__all__ = [
    "SIM_TITLE",
    "rdm_heatmap",
    "similarity_heatmap",
    "BYTE_TOKEN",
    "DEPTH_TITLE",
    "HEATMAP_SCHEME",
    "LABEL_LIMIT",
    "MIN_HEIGHT",
    "MIN_WIDTH",
    "OKABE_ITO",
    "SERIES",
    "STAGES",
    "depth_lines",
    "finish",
    "guess_histogram",
    "guess_rule",
    "k_curves",
    "knockout_chart",
    "layer_bars",
    "matrix_heatmap",
    "neuron_scatter",
    "patching_chart",
    "pattern_chart",
    "scaled_lines",
    "show_token",
    "stacked_shares",
    "stage_chart",
    "symlog_ticks",
    "token_heatmap",
    "trace_heatmaps",
    "wrap",
]
