"""Activation patching's engine: copy clean activations into a corrupted run, row by row.

The engine behind ``precompute.methods.activation_patching`` (METHODS.md B3), apart so that the
method module stays thin. Runs go through the one block replay (``precompute.model.replay``): the
clean run caches the residual states, and rows patched at the last position reuse the corrupted
prefix's keys and values (``run_rows``), all under the model lock.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> ids = lm.tokenize("The capital is located in the city of")
    >>> patched_logits(lm, ids, ids, [Patch("resid", 1, 3)]).shape[0]
    3
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from precompute.model.internals import resid_hook_names
from precompute.model.load import LoadedModel
from precompute.model.replay import forward, run_rows


@dataclass(frozen=True)
class Patch:
    """Copy a clean activation into the corrupted run.

    Attributes:
        kind: ``resid`` (state ``h_layer``, ``layer = 0..L``) or ``block_out`` (block ``layer``'s
            output delta ``h_{layer+1} - h_layer``).
        layer: State or block index.
        position: Token position.
    """

    kind: str
    layer: int
    position: int


def _row_hooks(
    lm: LoadedModel,
    patches: Sequence[Patch | None],
    clean: dict[str, torch.Tensor],
    n_tokens: int,
) -> list[tuple[str, Callable]]:
    """TransformerLens hooks that apply each row's patch (row ``r`` gets ``patches[r]``).

    The hooked tensors hold the positions being computed: all ``T``, or only the last ones when
    the prefix comes from a key/value cache, so positions are counted from the end.
    """
    names = resid_hook_names(lm.n_layers)
    by_name: dict[str, list[tuple[int, int, str, int]]] = {}
    for row, p in enumerate(patches):
        if p is None:
            continue
        if p.kind == "resid":
            by_name.setdefault(names[p.layer], []).append((row, p.position, "set", p.layer))
        elif p.kind == "block_out":
            pre, post = f"blocks.{p.layer}.hook_resid_pre", f"blocks.{p.layer}.hook_resid_post"
            by_name.setdefault(pre, []).append((row, p.position, "keep", p.layer))
            by_name.setdefault(post, []).append((row, p.position, "add", p.layer))
        else:
            raise ValueError(f"Unknown patch kind {p.kind!r}; use resid or block_out.")
    kept: dict[tuple[int, int], torch.Tensor] = {}

    def make(name: str, todo: list[tuple[int, int, str, int]]) -> Callable:
        def hook(x, hook):  # x: (B, T_q, D), T_q = T or the positions after a cache
            x = x.clone()
            offset = n_tokens - x.shape[1]
            for row, pos, op, layer in todo:
                xi = pos - offset  # index of this position in x (the clean states are full)
                if op == "set":
                    x[row, xi] = clean[names[layer]][pos]
                elif op == "keep":
                    kept[(row, layer)] = x[row, xi].clone()
                else:  # add: the corrupted h_l plus the clean block's own delta
                    pre = clean[f"blocks.{layer}.hook_resid_pre"][pos]
                    post = clean[f"blocks.{layer}.hook_resid_post"][pos]
                    x[row, xi] = kept[(row, layer)] + (post - pre)
            return x

        return hook

    # "keep" hooks (resid_pre of block l) run before the "add" hooks (resid_post of block l).
    return [(name, make(name, todo)) for name, todo in by_name.items()]


@torch.inference_mode()
def patched_logits(
    lm: LoadedModel,
    clean_ids: torch.Tensor,
    corr_ids: torch.Tensor,
    patches: Sequence[Patch],
    batch_rows: int = 128,
    use_cache: bool = True,
) -> torch.Tensor:
    """Last-position logits: row 0 clean, row 1 corrupted, then one row per patch.

    With ``use_cache``, rows patched at the last position reuse the corrupted prefix's keys and
    values (the same numbers to float rounding, tested), which makes them ``T`` times cheaper.

    Args:
        lm: Loaded model.
        clean_ids: ``(1, T)``.
        corr_ids: ``(1, T)``, same length.
        patches: Activations to copy from the clean run into the corrupted run.
        batch_rows: Most rows per forward pass.
        use_cache: Reuse the corrupted prefix for last-position patches.

    Returns:
        ``(2 + len(patches), V)`` float32 logits at the last position.
    """
    if clean_ids.shape != corr_ids.shape:
        raise ValueError(
            f"Clean and corrupted prompts must have the same number of tokens "
            f"({clean_ids.shape[1]} vs {corr_ids.shape[1]})."
        )
    n_tokens, n_layers = int(clean_ids.shape[1]), lm.n_layers
    for p in patches:
        top = n_layers if p.kind == "resid" else n_layers - 1
        if not (0 <= p.layer <= top and 0 <= p.position < n_tokens):
            raise ValueError(f"Patch {p} is outside the model (L = {n_layers}) or the prompt.")
    names = set(resid_hook_names(n_layers)) | {
        f"blocks.{i}.hook_resid_{s}" for i in range(n_layers) for s in ("pre", "post")
    }
    clean_logits, cache = forward(lm, clean_ids, names=names, logits_to_keep=1)
    clean = {n: cache[n][0] for n in names}  # (T, D) each
    # Patches at the last position leave every earlier position of the corrupted run as it is:
    # those rows reuse the corrupted prefix through a key/value cache and compute one token each.
    last = n_tokens - 1
    rows: list[Patch | None] = [None, *patches]  # row 0 here: the corrupted run
    cacheable = use_cache and n_tokens > 1
    fast = [i for i, p in enumerate(rows) if cacheable and (p is None or p.position == last)]
    slow = [i for i in range(len(rows)) if i not in set(fast)]
    out = torch.empty(len(rows), clean_logits.shape[-1])
    for group, cached in ((fast, True), (slow, False)):
        for r0 in range(0, len(group), max(1, batch_rows)):
            idx = group[r0 : r0 + max(1, batch_rows)]
            chunk = [rows[i] for i in idx]
            hooks = _row_hooks(lm, chunk, clean, n_tokens)
            logits = run_rows(lm, corr_ids, len(idx), hooks, reuse_prefix=cached)
            out[idx] = logits[:, -1].float()
    return torch.cat([clean_logits[:, -1].float(), out])
