"""Rank statistics of lens predictions across depth (METHODS.md A5; Gupta et al. 2025).

Pure functions on lens log-probabilities ``logp`` ``(S, V)`` at one position (states ``0..L``):
frequency buckets of the top-1 token, flips away from the model's prediction, the earliest layer
from which a token ranks within ``k`` (and stays there), and multiple-choice format and decision
layers. Rows are ``metrics`` records with ``layer_kind = resid``; ``layer = -1`` rows hold a
relative depth.

Example:
    >>> import torch
    >>> logp = torch.log_softmax(torch.randn(5, 50), -1)
    >>> recs = prompt_records(logp, int(logp[-1].argmax()), torch.arange(1, 51), 4, "all")
    >>> sorted({r["metric"] for r in recs})[:2]
    ['bucket_fraction', 'earliest_layer_le_k']
"""

from __future__ import annotations

import torch

BUCKETS = ("top10", "top100", "top1000", "rest")
BUCKET_EDGES = (10, 100, 1000)
#: A subset of GUPTA's k grid ``unique(int(logspace(0, 4, 200)))`` (ours: fewer rows).
K_GRID = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def bucket_of(rank: int) -> str:
    """Frequency bucket of a 1-based rank: ``top10`` (1-10), ``top100``, ``top1000``, ``rest``."""
    for edge, name in zip(BUCKET_EDGES, BUCKETS):
        if rank <= edge:
            return name
    return BUCKETS[-1]


def ranks_of(logp: torch.Tensor, token: int) -> torch.Tensor:
    """``(S,)`` rank of ``token`` under each row of ``logp`` ``(S, V)`` (1 + strictly higher)."""
    return 1 + (logp > logp[:, token : token + 1]).sum(-1)


def earliest(ok: list[bool]) -> tuple[int, int]:
    """First index where ``ok`` holds, and first index from which it holds to the end."""
    first = next((i for i, v in enumerate(ok) if v), len(ok))
    stable = len(ok)
    for i in range(len(ok) - 1, -1, -1):
        if not ok[i]:
            break
        stable = i
    return first, stable


def _rec(layer: int, n_layers: int, metric: str, value: float, unit: str, **kw) -> dict:
    rd = layer / n_layers if layer >= 0 else -1.0
    return dict(
        layer=layer,
        layer_kind="resid",
        n_layers=n_layers,
        rel_depth=rd,
        metric=metric,
        value=float(value),
        unit=unit,
        **kw,
    )


def earliest_records(rank: torch.Tensor, n_layers: int, group: str, **kw) -> list[dict]:
    """``earliest_layer_le_k`` and ``stable_layer_le_k`` (relative depth) for every k of K_GRID."""
    recs = []
    rank_l = rank.tolist()
    for k in K_GRID:
        first, stable = earliest([r <= k for r in rank_l])
        recs.append(
            _rec(
                -1,
                n_layers,
                "earliest_layer_le_k",
                first / n_layers,
                "fraction",
                grp=f"{group}|k={k}",
                **kw,
            )
        )
        recs.append(
            _rec(
                -1,
                n_layers,
                "stable_layer_le_k",
                stable / n_layers,
                "fraction",
                grp=f"{group}|k={k}",
                **kw,
            )
        )
    return recs


def prompt_records(
    logp: torch.Tensor, y_star: int, freq_rank: torch.Tensor, n_layers: int, group: str, **kw
) -> list[dict]:
    """Bucket shares, flips and earliest-layer rows of one prompt.

    Args:
        logp: ``(S, V)`` lens log-probabilities at the last position, states ``0..L``.
        y_star: The model's greedy prediction.
        freq_rank: ``(V,)`` corpus frequency rank of each token.
        n_layers: ``L``.
        group: Label of the prompt's group for the earliest-layer rows.
        **kw: Extra columns (``variant``, ``prompt_id`` ...).
    """
    top1 = logp.argmax(-1).tolist()  # (S,)
    recs = []
    for layer, tok in enumerate(top1):
        b = bucket_of(int(freq_rank[tok]))
        for name in BUCKETS:
            recs.append(
                _rec(layer, n_layers, "bucket_fraction", name == b, "fraction", grp=name, **kw)
            )
        flip = tok != y_star
        recs.append(_rec(layer, n_layers, "flip_rate", flip, "fraction", grp=b, **kw))
        recs.append(_rec(layer, n_layers, "flip_rate", flip, "fraction", grp="all", **kw))
    rank = ranks_of(logp, y_star)
    recs += earliest_records(rank, n_layers, group, **kw)
    pred_bucket = bucket_of(int(freq_rank[y_star]))
    recs += earliest_records(rank, n_layers, f"pred:{pred_bucket}", **kw)
    return recs


def mcq_records(
    logp: torch.Tensor, option_ids: list[int], gold: int, k: int, n_layers: int, **kw
) -> list[dict]:
    """Format and decision per layer for one multiple-choice item (A5.5).

    Args:
        logp: ``(S, V)`` lens log-probabilities at the answer position.
        option_ids: Token id of each option letter.
        gold: Index of the correct option.
        k: Format holds when every option token is in the lens top-k.
        n_layers: ``L``.
        **kw: Extra columns.
    """
    opt = torch.tensor(option_ids)
    ranks = torch.stack([ranks_of(logp, int(t)) for t in option_ids], -1)  # (S, O)
    fmt = (ranks <= k).all(-1).tolist()  # (S,)
    mass = logp[:, opt].exp().sum(-1).tolist()  # (S,)
    choice = logp[:, opt].argmax(-1).tolist()  # (S,)
    final = choice[-1]
    recs = []
    for layer in range(logp.shape[0]):
        recs.append(_rec(layer, n_layers, "format_ok", fmt[layer], "fraction", **kw))
        recs.append(_rec(layer, n_layers, "option_mass", mass[layer], "prob", **kw))
        recs.append(
            _rec(layer, n_layers, "decision_final", choice[layer] == final, "fraction", **kw)
        )
        recs.append(_rec(layer, n_layers, "decision_gold", choice[layer] == gold, "fraction", **kw))
    dec = [c == final for c in choice]
    for name, ok in (("format", fmt), ("decision", dec)):
        first, stable = earliest(ok)
        recs.append(_rec(-1, n_layers, f"{name}_first", first / n_layers, "fraction", **kw))
        recs.append(_rec(-1, n_layers, f"{name}_settled", stable / n_layers, "fraction", **kw))
    recs.append(_rec(-1, n_layers, "model_correct", final == gold, "fraction", **kw))
    return recs
