"""Attention edge knockout: block chosen attention edges into one query position (every head).

The engine behind ``precompute.methods.attention_knockout`` (METHODS.md B2), apart so that the
method module stays thin. Two implementations that must agree (tested): ``impl="mask"`` edits the
additive attention mask each attention layer receives (GEVA's ``finfo.min`` mask),
``impl="score_hook"`` writes -inf into ``blocks.{i}.attn.hook_attn_scores`` (TransformerLens's
pre-softmax scores, after the causal mask; RAGER's approach). Rows run through the one block replay
(``precompute.model.replay.run_rows``), which holds the model lock and may reuse the clean prefix's
keys and values.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> ids = lm.tokenize("The Eiffel Tower is located in")
    >>> knockout_logprobs(lm, ids, [Cut((), ()), Cut((0,), (1, 2))]).shape[0]
    2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from precompute.model.load import LoadedModel
from precompute.model.replay import block_stack, run_rows

IMPLS = ("score_hook", "mask")


@dataclass(frozen=True)
class Cut:
    """One knockout: block edges ``query -> keys`` in ``layers`` (every head)."""

    layers: tuple[int, ...]
    keys: tuple[int, ...]


def _check_cuts(cuts: Sequence[Cut], query: int, n_tokens: int, n_layers: int) -> None:
    if not 0 <= query < n_tokens:
        raise ValueError(f"Query position {query} is outside the prompt (T = {n_tokens}).")
    visible = set(range(query + 1))
    for cut in cuts:
        if any(not 0 <= layer < n_layers for layer in cut.layers):
            raise ValueError(f"Layers {cut.layers} outside 0..{n_layers - 1}.")
        if any(not 0 <= k < n_tokens for k in cut.keys):
            raise ValueError(f"Keys {cut.keys} outside the prompt (T = {n_tokens}).")
        if cut.layers and visible <= set(cut.keys):
            raise ValueError(
                "This knockout blocks every key the query can see; softmax over no keys is "
                "undefined (NaN). Leave at least one key."
            )


def _mask_hook(rows: list[tuple[int, list[int]]], query: int, n_tokens: int) -> Callable:
    """Forward pre-hook that edits the 4-D additive (or boolean) attention mask of one layer.

    The mask's query rows are the positions being computed (all ``T``, or only the last ones when
    the prefix comes from a key/value cache), so the query's row is counted from the end.
    """

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None or mask.ndim != 4:
            raise RuntimeError(
                "The mask-based knockout needs the 4-D attention mask that eager attention "
                "receives; use impl='score_hook' for this model."
            )
        batch = kwargs["hidden_states"].shape[0] if "hidden_states" in kwargs else args[0].shape[0]
        new = mask.expand(batch, *mask.shape[1:]).clone()  # (B, 1|H, T_q, T)
        qi = new.shape[-2] - (n_tokens - query)
        fill = False if new.dtype == torch.bool else torch.finfo(new.dtype).min
        for row, keys in rows:
            new[row, :, qi, keys] = fill
        kwargs["attention_mask"] = new
        return args, kwargs

    return hook


def _score_hook(rows: list[tuple[int, list[int]]], query: int, n_tokens: int) -> Callable:
    """TransformerLens hook on ``hook_attn_scores`` (pre-softmax): -inf on the blocked edges."""

    def hook(scores, hook):  # scores: (B, H, T_q, T), T_q = T or the positions after a cache
        scores = scores.clone()
        qi = scores.shape[-2] - (n_tokens - query)
        for row, keys in rows:
            scores[row, :, qi, keys] = float("-inf")
        return scores

    return hook


@torch.inference_mode()
def knockout_logprobs(
    lm: LoadedModel,
    ids: torch.Tensor,
    cuts: Sequence[Cut],
    query: int | None = None,
    impl: str = "score_hook",
    chunk_elems: int = 2**24,
    use_cache: bool = True,
) -> torch.Tensor:
    """Log-probabilities at the query position under each knockout (one batch row per cut).

    Only edges *into* the query are cut, so every position before it keeps its clean states. With
    ``use_cache`` (and the query the last token) the prefix runs once per forward pass into a
    key/value cache and only the query token is recomputed per row: ``T - 1 + B`` token-forwards
    instead of ``B * T``, the same numbers to float rounding (tested).

    Args:
        lm: Loaded model.
        ids: ``(1, T)`` token ids.
        cuts: Knockouts; a cut with no layers is the clean run.
        query: Query position (default the last, ``T-1``).
        impl: ``score_hook`` or ``mask`` (same numbers, two code paths).
        chunk_elems: Upper bound on ``rows x positions x vocab`` logits per forward pass.
        use_cache: Reuse the clean prefix through a key/value cache (last-token query only).

    Returns:
        ``(len(cuts), V)`` float32 log-probabilities at ``query``.
    """
    if impl not in IMPLS:
        raise ValueError(f"Unknown knockout implementation {impl!r}; use one of {IMPLS}.")
    n_tokens, n_layers = int(ids.shape[1]), lm.n_layers
    query = n_tokens - 1 if query is None else query
    _check_cuts(cuts, query, n_tokens, n_layers)
    keep = n_tokens - query  # logits from the query position on
    step = min(len(cuts), max(8, chunk_elems // max(keep * lm.d_vocab, 1)))
    out = []
    for c0 in range(0, len(cuts), step):
        # Every forward has the same batch shape (the last chunk is padded with clean rows), so a
        # row's numbers do not depend on which chunk it falls in: an empty cut equals the clean row.
        chunk = list(cuts[c0 : c0 + step])
        n_real = len(chunk)
        chunk += [Cut((), ())] * (step - n_real)
        per_layer: dict[int, list[tuple[int, list[int]]]] = {}
        for row, cut in enumerate(chunk):
            for layer in cut.layers:
                per_layer.setdefault(layer, []).append((row, list(cut.keys)))
        if impl == "score_hook":
            fwd = [
                (f"blocks.{layer}.attn.hook_attn_scores", _score_hook(rows, query, n_tokens))
                for layer, rows in per_layer.items()
            ]
            pre = []
        else:
            blocks = block_stack(lm)
            fwd = []
            pre = [
                (blocks[layer].attn, _mask_hook(rows, query, n_tokens))
                for layer, rows in per_layer.items()
            ]
        logits = run_rows(
            lm, ids, len(chunk), fwd, pre, reuse_prefix=use_cache, logits_to_keep=keep
        )  # (B, keep, V)
        out.append(torch.log_softmax(logits[:n_real, 0].float(), -1))  # (B, V)
    return torch.cat(out)
