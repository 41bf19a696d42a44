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

from precompute.facts import subject_tokens, window_layers
from precompute.model.internals import final_norm, unembed
from precompute.model.load import LoadedModel
from precompute.model.replay import Replay, block_stack

if TYPE_CHECKING:
    from precompute.model.tracing import CausalTracingConfig, Setup, TraceResult


KINDS = ("hidden", "mlp", "attn")
KIND_HOOK = {"hidden": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}

_SIGMA_CACHE: dict[tuple[int, str], float] = {}
_POINTS: dict[tuple[int, str], list] = {}


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
    """Mean over each group of ``samples`` rows of ``softmax(logits)[o]``: ``(B, V) -> (B/S,)``.

    ``softmax(z)[o] = exp(z[o] - logsumexp(z))``: one reduction per row, no ``(B, V)`` softmax.
    """
    z = logits.float()
    p = (z[:, o] - torch.logsumexp(z, -1)).exp()
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


def plan_positions(
    kinds: list[str], n_layers: int, positions: list[int], per_batch: int, coarse_first: bool
) -> list[tuple[str, list[int], int]]:
    """The steps ``(kind, layers, position)`` of the replay from the token on (``restored_logits``).

    Each token's layers come in two sets, every 4th block (``l % 4 == 0``) and the others, each
    cut into batches of ``per_batch`` layers. In order: kinds, positions, sets. ``coarse_first``
    keeps the same steps (the same numbers) and runs every kind's every-4th-block set first,
    latest token first (a step there computes one position), then the others.
    """
    sets = [[x for x in range(n_layers) if x % 4 == 0], [x for x in range(n_layers) if x % 4]]
    chunks = [[s[i : i + per_batch] for i in range(0, len(s), per_batch)] for s in sets]
    if not coarse_first:
        return [(k, c, t) for k in kinds for t in positions for cs in chunks for c in cs]
    return [(k, c, t) for cs in chunks for k in kinds for t in positions[::-1] for c in cs]


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
    on needs only these (``b = 0``: ``(None, None)`` per block). Supported: blocks that take a
    ``past_key_values`` cache, an explicit 4-D attention mask and rotary
    ``position_embeddings`` (Llama, Gemma); other architectures replay every position.
    """
    calls = rep.calls
    if any(args or "past_key_values" not in kw for args, kw in calls):
        return None
    sliced = [_sliced(kw, 0, b, b) for _, kw in calls]
    if any(s is None or "attention_mask" not in s for s in sliced):
        return None
    if b < 1:  # nothing before the subject
        return [(None, None)] * len(calls)
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


class _PrefixKV:
    """A cache for one block call: known keys and values put before the block's own.

    ``keep``: the full keys and values are kept (``full``).
    """

    def __init__(self, keys: torch.Tensor | None, values: torch.Tensor | None, keep: bool = False):
        self.keys, self.values, self.keep, self.full = keys, values, keep, None

    def update(self, k, v, layer_idx=None, cache_kwargs=None):  # noqa: D102 (Cache.update)
        if self.keys is not None and self.keys.shape[2]:
            k = torch.cat([self.keys.to(k.dtype), k], 2)
            v = torch.cat([self.values.to(v.dtype), v], 2)
        if self.keep:
            self.full = (k, v)
        return k, v


def hook_points(lm: LoadedModel, kind: str) -> list[torch.nn.Module]:
    """The bridge's hook point of ``kind`` (``KIND_HOOK``) in every block (looked up once).

    A torch forward hook on the point itself costs microseconds; ``bridge.hooks`` resolves
    its names on every entry (about 50 ms on SmolLM2), too slow once per block.
    """
    key = (id(lm.bridge), kind)
    if key not in _POINTS:
        points = lm.bridge.hook_dict
        _POINTS[key] = [points[f"blocks.{j}.{KIND_HOOK[kind]}"] for j in range(lm.n_layers)]
    return _POINTS[key]


def _block(lm: LoadedModel, rep: Replay, j: int, x, q0: int, cache, hooks=()) -> torch.Tensor:
    """Block ``j`` on positions ``q0..T-1`` (``x``: ``(B, T-q0, D)``); one locked step.

    ``hooks``: ``(module, fn(output) -> output)`` pairs, on for this block only.
    """
    n_tok = rep.states.shape[1]
    kw = {**_sliced(rep.calls[j][1], q0, n_tok, n_tok), "past_key_values": cache}
    kw["use_cache"] = True
    with lm.lock:
        handles = [m.register_forward_hook(lambda _m, _a, out, f=f: f(out)) for m, f in hooks]
        try:
            out = block_stack(lm)[j](x.to(lm.bridge.original_model.dtype), **kw)
        finally:
            for h in handles:
                h.remove()
    return out[0] if isinstance(out, tuple) else out


@dataclass
class Corrupted:
    """The corrupted run from the subject on: every block's input and its keys and values.

    Attributes:
        b: The first subject token (positions before it are clean in every run).
        states: ``L + 1`` tensors ``(S, T - b, D)``: block ``j``'s input at positions
            ``b..T-1`` (``states[L]``: the last block's output).
        kv: ``L`` pairs ``(S, heads, T, head_dim)``: block ``j``'s keys and values.
    """

    b: int
    states: list[torch.Tensor]
    kv: list[tuple[torch.Tensor, torch.Tensor]]


@torch.inference_mode()
def corrupted_run(lm: LoadedModel, rep: Replay, kv: list[tuple], x: torch.Tensor) -> Corrupted:
    """Run the corrupted copies ``x`` ``(S, T - b, D)`` (block 0's input) through every block.

    ``kv``: the clean prefix's keys and values (:func:`prefix_kv`). The model's lock is held one
    block at a time.
    """
    n, b = x.shape[0], rep.states.shape[1] - x.shape[1]
    states, kvs = [x], []
    for j in range(lm.n_layers):
        k, v = kv[j]
        cache = _PrefixKV(*(t.expand(n, -1, -1, -1) if t is not None else t for t in (k, v)), True)
        x = _block(lm, rep, j, x, b, cache)
        states.append(x)
        kvs.append(cache.full)
    return Corrupted(b, states, kvs)


@torch.inference_mode()
def restored_logits(
    lm: LoadedModel,
    rep: Replay,
    cor: Corrupted,
    kind: str,
    p: int,
    layers: Sequence[int],
    clean: torch.Tensor,
    window: int,
) -> torch.Tensor:
    """Last-position logits of the restorations at token ``p`` of ``kind`` at ``layers``.

    A restoration at token ``p`` changes no position before ``p`` and no block below the first
    restored one, so each restoration starts from the corrupted run at its first block and
    computes positions ``p..T-1`` only, the keys and values of positions before ``p`` taken
    from the corrupted run. All layers' restorations of the ``S`` copies share the batch (a
    layer's rows join at its first block). The model's lock is held one block at a time.

    Args:
        lm: Loaded model.
        rep: The clean run (block arguments).
        cor: The corrupted run (:func:`corrupted_run`).
        kind: ``hidden`` (block ``l``'s output), ``mlp`` or ``attn`` (the outputs of the window
            of ``window`` layers around ``l``).
        p: The restored token (``p >= cor.b``).
        layers: The layers ``l`` (ascending).
        clean: ``(L, T, D)`` clean states of ``kind``.
        window: The window W.

    Returns:
        ``(len(layers) * S, V)`` float32 logits, layer-major.
    """
    n_layers, samples = lm.n_layers, cor.states[0].shape[0]
    q = p - cor.b
    if kind == "hidden":
        spans = [range(ell, ell + 1) for ell in layers]
        starts = [ell + 1 for ell in layers]
    else:
        spans = [window_layers(ell, window, n_layers) for ell in layers]
        starts = [s.start for s in spans]
    if starts != sorted(starts):
        raise ValueError("layers must be ascending")
    x = None
    for j in range(starts[0], n_layers + 1):
        new = [g for g, s in enumerate(starts) if s == j]
        if new:
            add = cor.states[j][:, q:].repeat(len(new), 1, 1)  # (len(new) * S, T - p, D)
            if kind == "hidden":
                add[:, 0] = clean[j - 1, p].to(add.dtype)
            x = add if x is None else torch.cat([x, add])
        if j == n_layers:
            break
        active = sum(1 for s in starts if s <= j)
        hooks = []
        if kind != "hidden":
            rows = [g * samples + i for g in range(active) if j in spans[g] for i in range(samples)]
            if rows:
                hooks = [
                    (hook_points(lm, kind)[j], restore_hook(clean, j, torch.tensor(rows), p, p))
                ]
        k, v = (t[:, :, :p].repeat(active, 1, 1, 1) for t in cor.kv[j])
        x = _block(lm, rep, j, x, p, _PrefixKV(k, v), hooks)
    with lm.lock:
        return unembed(lm, final_norm(lm, x[:, -1:, :])).float()[:, 0]
