"""Adjacent layer swap (METHODS.md C2): run block ``l+1`` before block ``l``, for every pair.

Same metrics as the deletion (``layer_ablation``), with ``layer_kind = pair`` and ``layer = l``, the
first block of the pair, so a page can draw swap against delete layer by layer. Each block keeps its
own arguments when moved (on Gemma-3, its own attention type; see
``precompute.model.interventions``).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> df = run_one(lm, "The cat sat on the mat.", LayerSwapConfig())
    >>> sorted(df["layer"].unique().tolist()) == list(range(lm.n_layers - 1))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd

from precompute.methods import Method
from precompute.model import interventions as iv
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext


@dataclass(frozen=True)
class LayerSwapConfig(BaseConfig):
    """Defaults as ``layer_ablation`` (METHODS.md C2: "as C1").

    ``max_tokens`` = 64 and ``n_items`` = 16 (was ``n_docs``) are ours (CPU budget;
    LAD: 1,388 Pile documents); WikiText-2 instead of the Pile (ours).
    ``sweep`` = ``fast`` or ``reference`` (LAD: the model rebuilt with the two blocks exchanged).
    """

    RENAMED: ClassVar[dict[str, str]] = {"n_docs": "n_items"}

    max_tokens: int = 64
    n_items: int = 16
    sweep: str = "fast"
    chunk_elems: int = 2**26


def process(
    lm: LoadedModel, items: list[Item], cfg: LayerSwapConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Per-document, per-pair metrics of every adjacent swap."""
    if lm.n_layers < 2:
        raise ValueError(f"{lm.name} has one block: there is no pair to swap.")
    rows = iv.sweep_items(
        lm, items, iv.swap_all(lm.n_layers), cfg.max_tokens, cfg.sweep, cfg.chunk_elems
    )
    return {"metrics": ctx.metrics(rows)}


def run_one(lm: LoadedModel, prompt: str, cfg: LayerSwapConfig) -> pd.DataFrame:
    """Per-pair rows for one prompt (``ValueError`` for a prompt under two tokens)."""
    ids = lm.tokenize(prompt, max_tokens=cfg.max_tokens)
    ivs = iv.swap_all(lm.n_layers)
    m = iv.sweep(lm, ids, ivs, method=cfg.sweep, chunk_elems=cfg.chunk_elems)
    ctx = RunContext(model=lm.name, method="layer_swap", dataset="live")
    return ctx.metrics(iv.records(m, ivs, lm.n_layers, "live"))


METHOD = Method(
    name="layer_swap",
    summary="Swap adjacent blocks: KL, top-1 agreement, entropy and loss change per pair.",
    config_cls=LayerSwapConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=4,
)
