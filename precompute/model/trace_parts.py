"""Parts of causal tracing (``precompute.model.tracing``): the noise, the hooks, the step plan.

Kept apart so that the engine module stays short; ``precompute.model.tracing`` re-exports every
name, so callers import from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from precompute.facts import subject_tokens
from precompute.model.internals import final_norm, unembed
from precompute.model.load import LoadedModel
from precompute.model.replay import Replay, block_stack

if TYPE_CHECKING:
    from precompute.model.tracing import CausalTracingConfig, Setup, TraceResult


_SIGMA_CACHE: dict[tuple[int, str], float] = {}


@torch.inference_mode()
def embedding_sigma(lm: LoadedModel, subjects_in_prompts: list[tuple[str, str]]) -> float:
    """Measure the std of the ``hook_embed`` output over the subject tokens of the prompts.

    Measured where the noise is added: ``hook_embed`` is the embedding module's output (Gemma's
    sqrt(D) scale is inside that module; GPT-2's position embeddings are added after it). Token
    embeddings do not depend on context, so all subject tokens go through the module at once.
    """
    tokens: list[int] = []
    for text, subject in subjects_in_prompts:
        try:
            fact = subject_tokens(lm, text, subject)
        except ValueError:
            continue
        tokens += fact.ids[0, fact.start : fact.end].tolist()
    if not tokens:
        raise ValueError("No subject could be located to measure the embedding std.")
    with lm.lock:
        emb = lm.bridge.embed(torch.tensor([tokens], device=lm.device))  # (1, N, D)
    return float(emb.float().std())


def reference_sigma(lm: LoadedModel, ref: str = "facts") -> float:
    """Sigma over the subjects of a reference fact set (cached per model)."""
    key = (id(lm), ref)
    if key not in _SIGMA_CACHE:
        from precompute.datasets import load_dataset

        items, _ = load_dataset(ref)
        pairs = [(it.text, it.fields["subject"]) for it in items]
        _SIGMA_CACHE[key] = embedding_sigma(lm, pairs)
    return _SIGMA_CACHE[key]


def make_noise(
    cfg: CausalTracingConfig, n_subject: int, d_model: int, sigma: float
) -> torch.Tensor:
    """``(S, e - b, D)`` noise from ``RandomState(seed)``, re-seeded per fact (ROME's order)."""
    prng = np.random.RandomState(cfg.seed)
    eps = prng.randn(cfg.samples, n_subject, d_model)
    return torch.from_numpy(eps).float() * (cfg.noise_scale * sigma)


def traced_positions(cfg: CausalTracingConfig, n_tokens: int, b: int, e: int) -> list[int]:
    """Positions traced: all (``all``) or the last subject token and the last token."""
    if cfg.token_range == "all":
        return list(range(n_tokens))
    if cfg.token_range == "subject_last":
        return [e - 1, n_tokens - 1]
    raise ValueError(f"Unknown token_range {cfg.token_range!r}; use all or subject_last.")


def noise_hook(setup: Setup, first_noised: int) -> Callable:
    """Add the fact's noise to rows ``first_noised..`` of the embedding output."""
    b, e = setup.fact.start, setup.fact.end

    def hook(x, hook=None):  # (B, T, D)
        n = x.shape[0] - first_noised
        reps = n // setup.noise.shape[0]
        x[first_noised:, b:e] += setup.noise.repeat(reps, 1, 1).to(x.dtype)
        return x

    return hook


def mean_prob(logits: torch.Tensor, o: int, samples: int) -> torch.Tensor:
    """Mean over each group of ``samples`` rows of ``softmax(logits)[o]``: ``(B,) -> (B/S,)``."""
    p = torch.softmax(logits.float(), -1)[:, o]
    return p.reshape(-1, samples).mean(-1)


def restore_hook(
    src: torch.Tensor, i: int, rows: torch.Tensor, tpos: torch.Tensor, offset: int = 0
) -> Callable:
    """A hook writing the clean ``src[i]`` at positions ``tpos`` (``tpos - offset`` in ``x``)."""

    def restore(x, hook=None):
        x[rows, tpos - offset] = src[i, tpos].to(x.dtype)
        return x

    return restore


@dataclass
class TraceFrame:
    """A partial trace: ``result.scores`` holds NaN where no cell is computed yet.

    Attributes:
        result: The trace so far (``seconds`` = time until this frame).
        done: Replay steps done; total: steps in the whole trace.
        cells: ``kind -> (T, L)`` bool, True where a cell is computed (or needs none).
    """

    result: TraceResult
    done: int
    total: int
    cells: dict[str, torch.Tensor]

    @property
    def fraction(self) -> float:
        """Share of the replay steps done."""
        return self.done / max(self.total, 1)


def plan(
    kinds: list[str], n_layers: int, positions: list[int], per_batch: int, coarse_first: bool
) -> list[tuple[str, int, list[int]]]:
    """The replay steps ``(kind, layer, positions)``: every traced cell once.

    In order: kinds, layers, batches of positions. ``coarse_first`` keeps the same steps (so
    every cell comes from the same batch, and the numbers are the same) and reorders them:
    every 4th block of every kind first, then the other blocks, latest first in each pass
    (they run the fewest blocks, so the first partial heatmap comes within seconds).
    """
    passes = [list(range(n_layers))]
    if coarse_first:
        late_first = passes[0][::-1]
        passes = [[x for x in late_first if x % 4 == 0], [x for x in late_first if x % 4]]
    return [
        (k, layer, positions[i : i + per_batch])
        for layers in passes
        for k in kinds
        for layer in layers
        for i in range(0, len(positions), per_batch)
    ]


# ---------------------------------------------------------------------------------------------
# Suffix replay: the clean prefix's keys and values computed once


def _sliced(kwargs: dict, q0: int, q1: int, k1: int) -> dict | None:
    """A block's captured arguments for queries ``q0..q1-1`` over keys ``0..k1-1``, or None."""
    out = {}
    for name, val in kwargs.items():
        if name == "attention_mask" and torch.is_tensor(val) and val.dim() == 4:
            out[name] = val[:, :, q0:q1, :k1]
        elif name == "position_embeddings" and isinstance(val, tuple):
            out[name] = tuple(v[:, q0:q1] for v in val)
        elif name in ("position_ids", "cache_position") and torch.is_tensor(val):
            out[name] = val[..., q0:q1]
        elif name in ("past_key_values", "use_cache") or not torch.is_tensor(val):
            if torch.is_tensor(val) or isinstance(val, tuple):
                return None
            out[name] = val
        else:
            return None  # an argument this code does not know how to cut
    return out


@torch.inference_mode()
def prefix_kv(lm: LoadedModel, rep: Replay, b: int) -> list[tuple] | None:
    """Keys and values of the clean positions ``0..b-1`` at every block (``None``: unsupported).

    Before the subject every restored run equals the clean run, so a replay from the subject
    on needs only these. Supported: blocks that take a ``past_key_values`` cache, an explicit
    4-D attention mask and rotary ``position_embeddings`` (Llama, Gemma); other architectures
    replay every position.
    """
    calls = rep.calls
    if b < 1 or any(args or "past_key_values" not in kw for args, kw in calls):
        return None
    sliced = [_sliced(kw, 0, b, b) for _, kw in calls]
    if any(s is None or "attention_mask" not in s for s in sliced):
        return None
    from transformers.cache_utils import DynamicCache

    kv = []
    with lm.lock:
        for j, block in enumerate(block_stack(lm)):
            cache = DynamicCache()
            kw = {**sliced[j], "past_key_values": cache, "use_cache": True}
            block(rep.states[j][None, :b].to(lm.bridge.original_model.dtype), **kw)
            layer = cache.layers[-1]
            kv.append((layer.keys, layer.values))
    return kv


@torch.inference_mode()
def run_suffix(
    lm: LoadedModel,
    rep: Replay,
    kv: list[tuple],
    x: torch.Tensor,
    start: int,
    fwd_hooks: Sequence = (),
) -> torch.Tensor:
    """Blocks ``start..L-1`` on positions ``b..T-1`` (``x``: ``(B, T-b, D)``), prefix from ``kv``.

    Returns ``(B, V)`` float32 logits of the last position. With hooks one locked step, as
    ``run_from``; without, the model's lock is held one block at a time (a hidden-state step
    ran up to 4 s: other students' requests now wait at most one block).
    """
    from transformers.cache_utils import DynamicCache

    n_tok, b = rep.states.shape[1], rep.states.shape[1] - x.shape[1]
    n = x.shape[0]
    cache = DynamicCache(
        ddp_cache_data=[(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv]
    )
    blocks = block_stack(lm)

    def run(j: int, x: torch.Tensor) -> torch.Tensor:
        kw = {**_sliced(rep.calls[j][1], b, n_tok, n_tok), "past_key_values": cache}
        out = blocks[j](x, **{**kw, "use_cache": True})
        return out[0] if isinstance(out, tuple) else out

    if not fwd_hooks:  # nothing registered: the lock is taken per block, others pass between
        for j in range(start, lm.n_layers):
            with lm.lock:
                x = run(j, x)
        with lm.lock:
            return unembed(lm, final_norm(lm, x[:, -1:, :])).float()[:, 0]
    with lm.lock, lm.bridge.hooks(fwd_hooks=list(fwd_hooks)):
        for j in range(start, lm.n_layers):
            x = run(j, x)
        return unembed(lm, final_norm(lm, x[:, -1:, :])).float()[:, 0]
