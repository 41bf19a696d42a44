"""Layer deletion (METHODS.md C1): a block writes nothing and the residual stream skips it.

For every block ``l`` (and, as variants, its attention only or its MLP only), the intervened model's
next-token distribution is compared with the normal one on WikiText-2 documents: KL(normal ||
deleted) in nats, top-1 agreement, entropy change in bits and next-token loss change in nats
(``precompute.model.interventions`` has the definitions and both sweeps). ``build`` aggregates the
per-document rows into means with 95 % intervals over documents.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> df = run_one(lm, "The cat sat on the mat.", LayerAblationConfig(variants="block"))
    >>> sorted(df["layer"].unique().tolist()) == list(range(lm.n_layers))
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
class LayerAblationConfig(BaseConfig):
    """Defaults.

    ``variants``: ``block`` is LAD's deletion (both hooks zeroed, Fig. 3); ``attn`` / ``mlp`` zero
    one of the two (LAD Appendix B). ``max_tokens`` = 64 and ``n_items`` = 16 (was ``n_docs``) are
    ours (CPU budget; LAD takes 1,388 Pile documents truncated to the context, ``__main__`` 10).
    Data: WikiText-2 test
    paragraphs instead of the Pile (ours: the Pile is not shippable, METHODS.md F). No
    TransformerLens weight folding: it does not change a model's outputs, so the metrics do not
    depend on it.
    ``sweep`` = ``fast`` (cached normal run) or ``reference`` (LAD's full passes); same numbers.
    """

    RENAMED: ClassVar[dict[str, str]] = {"n_docs": "n_items"}

    variants: str = "block,attn,mlp"
    max_tokens: int = 64
    n_items: int = 16
    sweep: str = "fast"
    chunk_elems: int = 2**26


def interventions(lm: LoadedModel, cfg: LayerAblationConfig) -> list[iv.Intervention]:
    """Every block, for each requested component."""
    return iv.delete_all(lm.n_layers, iv.parse_components(cfg.variants))


def process(
    lm: LoadedModel, items: list[Item], cfg: LayerAblationConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Per-document, per-layer metrics of every deletion."""
    rows = iv.sweep_items(
        lm, items, interventions(lm, cfg), cfg.max_tokens, cfg.sweep, cfg.chunk_elems
    )
    return {"metrics": ctx.metrics(rows)}


def run_one(lm: LoadedModel, prompt: str, cfg: LayerAblationConfig) -> pd.DataFrame:
    """Per-layer rows for one prompt (``ValueError`` for a prompt under two tokens)."""
    ids = lm.tokenize(prompt, max_tokens=cfg.max_tokens)
    ivs = interventions(lm, cfg)
    m = iv.sweep(lm, ids, ivs, method=cfg.sweep, chunk_elems=cfg.chunk_elems)
    ctx = RunContext(model=lm.name, method="layer_ablation", dataset="live")
    return ctx.metrics(iv.records(m, ivs, lm.n_layers, "live"))


METHOD = Method(
    name="layer_ablation",
    summary="Delete one block (or its attention / MLP): KL, top-1 agreement, entropy, loss change.",
    config_cls=LayerAblationConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=4,
)
