"""Causal tracing (METHODS.md B1; Meng et al. 2022, ROME): where along depth is a fact stored.

Corrupt the subject: add Gaussian noise ``nu * eps`` (``nu = 3 sigma``) to the embedding output
at the subject tokens of ``S`` copies of the prompt. Then restore one clean state at a time and
measure how much of the clean answer's probability comes back:

* ``hidden``: the output of block ``l`` at token ``t``;
* ``mlp`` / ``attn``: the MLP (attention) outputs at token ``t`` for every layer of a window of
  ``W`` layers around ``l`` (``[max(0, l - W//2), min(L, l - (-W//2)))``, as ROME).

``p_restored(t, l)`` is the mean over the ``S`` copies of ``softmax(logits[-1])[o]`` where ``o`` is
the *clean* argmax; ``indirect_effect = p_restored - p_corrupt``. The noise is drawn once per fact
with ``numpy.RandomState(seed)`` in ROME's shape order ``(S, e - b, D)`` and reused for every
restoration (common random numbers), so a restoration before the subject gives ``p_corrupt``
exactly.

Two implementations give the same numbers:

* :func:`trace_reference` runs ROME's batch of ``S + 1`` copies (copy 0 clean) for every
  ``(token, layer)`` from the first layer.
* :func:`trace` (the default) uses the structure of the intervention: a restoration at layer
  ``l`` and token ``t`` leaves every layer below ``l`` unchanged and every position before the
  subject untouched, so it starts from the cached corrupted residual at layer ``l``, runs only the
  blocks above it, reads only the last position's logits, and batches all tokens of one layer
  (window) in one pass.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> r = trace(lm, "The Eiffel Tower is located in the city of", "Eiffel Tower",
    ...           CausalTracingConfig(kinds="hidden", noise_sigma=1.0))
    >>> r.scores["hidden"].shape == (r.n_tokens, lm.n_layers)
    True
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from precompute.bench.util import matmul_peak_flops
from precompute.methods import Method
from precompute.model.internals import unembed
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext

log = logging.getLogger(__name__)

KINDS = ("hidden", "mlp", "attn")
TOKEN_GROUPS = (
    "before",
    "first_subject",
    "middle_subject",
    "last_subject",
    "first_subsequent",
    "further",
    "last",
)
_KIND_HOOK = {"hidden": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}


@dataclass(frozen=True)
class CausalTracingConfig(BaseConfig):
    """Defaults.

    ``samples`` S = 10, ``noise_scale`` 3 (nu = 3 sigma), ``window`` W = 10, ``seed`` 1
    (``RandomState(1)``) and "correct facts only" are ROME's (METHODS.md B1, G).
    Ours: ``n_items`` = 24 facts (CPU budget); ``noise_ref`` = the subjects of the team's facts file
    (ROME measures sigma over the subjects of the file it traces; a fixed reference set gives every
    chunk and every live trace the same sigma); ``noise_sigma`` > 0 overrides the measured sigma;
    ``token_range`` = ``all`` (``subject_last`` traces only the last subject token and the last
    token, ROME's cheap teaching mode); ``max_tokens`` = 32 (live limit); ``batch_seqs`` = 320;
    ``sample_every`` = k traces only facts whose id number is a multiple of k (e.g. 15 picks one
    fact of each relation of the team's facts), recorded facts included.
    """

    n_items: int = 24
    samples: int = 10
    noise_scale: float = 3.0
    noise_sigma: float = 0.0
    noise_ref: str = "facts"
    window: int = 10
    kinds: str = "hidden,mlp,attn"
    token_range: str = "all"
    seed: int = 1
    max_tokens: int = 32
    batch_seqs: int = 320
    sample_every: int = 1

    def kind_list(self) -> list[str]:
        """Return the kinds to trace, validated."""
        kinds = [k.strip() for k in self.kinds.split(",") if k.strip()]
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"Unknown kinds {bad or self.kinds!r}; use a subset of {KINDS}.")
        return kinds


class TraceCancelled(RuntimeError):
    """The progress callback asked to stop."""


@dataclass
class TraceResult:
    """One fact's trace.

    Attributes:
        ids: ``(T,)`` token ids.
        tokens: The tokens as strings.
        subject_range: ``(b, e)``: the subject is tokens ``b .. e-1``.
        answer_id: The clean argmax ``o`` at the last position.
        answer: ``o`` decoded.
        p_clean: ``p(o)`` on the clean prompt.
        p_corrupt: Mean ``p(o)`` over the ``S`` corrupted copies.
        sigma: The embedding standard deviation the noise was scaled by (noise = scale * sigma).
        correct: The clean answer matches the fact's answer (``None`` without an answer).
        scores: ``kind -> (T, L)`` ``p_restored``; rows before the subject equal ``p_corrupt``.
        seconds: Wall time of the trace.
    """

    ids: torch.Tensor
    tokens: list[str]
    subject_range: tuple[int, int]
    answer_id: int
    answer: str
    p_clean: float
    p_corrupt: float
    sigma: float
    correct: bool | None = None
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_tokens(self) -> int:
        """Number of tokens ``T``."""
        return int(self.ids.shape[0])

    def groups(self) -> list[str]:
        """Return the token group of every position (ROME's averaging groups)."""
        return token_groups(self.n_tokens, *self.subject_range)


# ---------------------------------------------------------------------------------------------
# Inputs: subject range, noise level, correctness


def subject_range(lm: LoadedModel, text: str, subject: str) -> tuple[torch.Tensor, int, int]:
    """Tokenise ``text`` and find the subject's tokens by character spans (offset mapping).

    Returns:
        ``(ids (1, T), b, e)`` with the subject in tokens ``b .. e-1`` (first occurrence).

    Raises:
        ValueError: The subject is empty, not in the prompt, covers the whole prompt, or is the
            end of the prompt (the prediction is read after the subject).
    """
    subject = (subject or "").strip()
    if not subject:
        raise ValueError("Mark the subject: it is empty.")
    start = text.find(subject)
    if start < 0:
        raise ValueError(f"The subject {subject!r} does not occur in the prompt {text!r}.")
    end = start + len(subject)
    enc = lm.tokenizer(text, return_offsets_mapping=True)
    ids = torch.tensor([enc["input_ids"]], device=lm.device)  # (1, T)
    if not torch.equal(ids.cpu(), lm.tokenize(text).cpu()):
        raise ValueError("The tokenizer's offsets do not match its ids; cannot locate the subject.")
    spans = enc["offset_mapping"]
    inside = [i for i, (s, e) in enumerate(spans) if e > s and s < end and e > start]
    if not inside:
        raise ValueError(f"The subject {subject!r} covers no token of the prompt.")
    b, e = inside[0], inside[-1] + 1
    content = [i for i, (s, e_) in enumerate(spans) if e_ > s]
    if b <= content[0] and e > content[-1]:
        raise ValueError(
            "The subject covers the whole prompt: write a prompt that continues after the subject "
            "(e.g. 'The Eiffel Tower is located in the city of')."
        )
    if e >= ids.shape[1]:
        raise ValueError(
            "The prompt ends with the subject: the answer is read at the last token, which must "
            "come after the subject. Add the relation (e.g. '... is located in')."
        )
    return ids, b, e


def token_groups(n_tokens: int, b: int, e: int) -> list[str]:
    """ROME's token groups: each position gets exactly one group.

    Priority: the last token, then last / first / middle subject token, then the first subsequent
    token; a one-token subject is its own ``last_subject`` token.
    """
    out = []
    for t in range(n_tokens):
        if t == n_tokens - 1:
            out.append("last")
        elif t < b:
            out.append("before")
        elif t == e - 1:
            out.append("last_subject")
        elif t == b:
            out.append("first_subject")
        elif t < e:
            out.append("middle_subject")
        elif t == e:
            out.append("first_subsequent")
        else:
            out.append("further")
    return out


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
            ids, b, e = subject_range(lm, text, subject)
        except ValueError:
            continue
        tokens += ids[0, b:e].tolist()
    if not tokens:
        raise ValueError("No subject could be located to measure the embedding std.")
    with lm.lock:
        emb = lm.bridge.embed(torch.tensor([tokens], device=lm.device))  # (1, N, D)
    return float(emb.float().std())


def noise_sigma(lm: LoadedModel, cfg: CausalTracingConfig) -> float:
    """Return the sigma the noise is scaled by: the config's, else measured (takes ``lm.lock``)."""
    return cfg.noise_sigma if cfg.noise_sigma > 0 else reference_sigma(lm, cfg.noise_ref)


def reference_sigma(lm: LoadedModel, ref: str = "facts") -> float:
    """Sigma over the subjects of a reference fact set (cached per model)."""
    key = (id(lm), ref)
    if key not in _SIGMA_CACHE:
        from precompute.datasets import load_dataset

        items, _ = load_dataset(ref)
        pairs = [(it.text, it.fields["subject"]) for it in items]
        _SIGMA_CACHE[key] = embedding_sigma(lm, pairs)
    return _SIGMA_CACHE[key]


def answer_matches(lm: LoadedModel, answer_id: int, gold: str | None) -> bool | None:
    """ROME's correctness test, made tokenizer-neutral.

    The clean argmax is correct when it is the first token of ``" " + gold`` or decodes (stripped)
    to the gold string, as ROME's ``decode(o).strip() == attribute``.
    """
    if not gold:
        return None
    first = lm.tokenizer(" " + gold.strip(), add_special_tokens=False)["input_ids"][:1]
    decoded = lm.tokenizer.decode([answer_id]).strip()
    return bool(first and first[0] == answer_id) or decoded.lower() == gold.strip().lower()


def make_noise(
    cfg: CausalTracingConfig, n_subject: int, d_model: int, sigma: float
) -> torch.Tensor:
    """``(S, e - b, D)`` noise from ``RandomState(seed)``, re-seeded per fact (ROME's order)."""
    prng = np.random.RandomState(cfg.seed)
    eps = prng.randn(cfg.samples, n_subject, d_model)
    return torch.from_numpy(eps).float() * (cfg.noise_scale * sigma)


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """ROME's window around ``layer``: ``[max(0, l - W//2), min(L, l - (-W // 2)))``."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def traced_positions(cfg: CausalTracingConfig, n_tokens: int, b: int, e: int) -> list[int]:
    """Positions traced: all (``all``) or the last subject token and the last token."""
    if cfg.token_range == "all":
        return list(range(n_tokens))
    if cfg.token_range == "subject_last":
        return [e - 1, n_tokens - 1]
    raise ValueError(f"Unknown token_range {cfg.token_range!r}; use all or subject_last.")


# ---------------------------------------------------------------------------------------------
# The model, block by block


class BlockRunner:
    """Run the model's blocks from any layer on a batch of residual states.

    The keyword arguments each block receives (masks, rotary tables, position ids) are captured
    once from a real forward pass of the same length and replayed; the KV cache is switched off.
    """

    def __init__(self, lm: LoadedModel, ids: torch.Tensor):
        from transformers.cache_utils import Cache

        self.lm = lm
        self.captured: dict[int, tuple[tuple, dict]] = {}
        handles = []
        for i, blk in enumerate(lm.bridge.blocks):

            def pre(_mod, args, kwargs, i=i):
                self.captured[i] = (args, kwargs)

            handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
        try:
            self.logits, self.cache = lm.bridge.run_with_cache(ids, names_filter=_trace_names)
        finally:
            for h in handles:
                h.remove()
        for i, (args, kwargs) in self.captured.items():
            args = tuple(None if isinstance(a, Cache) else a for a in args[1:])
            kwargs = {k: (None if isinstance(v, Cache) else v) for k, v in kwargs.items()}
            if "use_cache" in kwargs:
                kwargs["use_cache"] = False
            self.captured[i] = (args, kwargs)

    def run(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Blocks ``start .. L-1`` on ``h`` ``(B, T, D)``; returns the last position's logits."""
        for i in range(start, self.lm.n_layers):
            args, kwargs = self.captured[i]
            out = self.lm.bridge.blocks[i](h, *args, **kwargs)
            h = out[0] if isinstance(out, tuple) else out
        last = self.lm.bridge.ln_final(h[:, -1:, :])  # (B, 1, D)
        return unembed(self.lm, last)[:, 0].float()  # (B, V)


def _trace_names(name: str) -> bool:
    return name.endswith(("hook_resid_post", "hook_resid_pre", "hook_mlp_out", "hook_attn_out"))


@dataclass
class _Setup:
    ids: torch.Tensor  # (1, T)
    b: int
    e: int
    noise: torch.Tensor  # (S, e-b, D)
    answer_id: int
    p_clean: float
    sigma: float


def _prepare(
    lm: LoadedModel, prompt: str, subject: str, cfg: CausalTracingConfig, sigma: float
) -> tuple[_Setup, BlockRunner]:
    """Locate the subject, run the clean pass (the caller holds ``lm.lock``), draw the noise."""
    ids, b, e = subject_range(lm, prompt, subject)
    if ids.shape[1] > cfg.max_tokens:
        raise ValueError(
            f"The prompt has {ids.shape[1]} tokens; causal tracing takes at most {cfg.max_tokens}. "
            "Shorten it to one sentence that ends where the answer should come."
        )
    if cfg.samples < 1 or cfg.window < 1:
        raise ValueError("samples and window must be at least 1.")
    runner = BlockRunner(lm, ids)
    probs = torch.softmax(runner.logits[0, -1].float(), -1)  # (V,)
    o = int(probs.argmax())
    noise = make_noise(cfg, e - b, lm.d_model, sigma).to(lm.device)
    return _Setup(ids, b, e, noise, o, float(probs[o]), sigma), runner


def _noise_hook(setup: _Setup, first_noised: int):
    """Add the fact's noise to rows ``first_noised..`` of the embedding output."""

    def hook(x, hook=None):  # (B, T, D)
        n = x.shape[0] - first_noised
        reps = n // setup.noise.shape[0]
        x[first_noised:, setup.b : setup.e] += setup.noise.repeat(reps, 1, 1).to(x.dtype)
        return x

    return hook


def _prob(logits: torch.Tensor, o: int, samples: int) -> torch.Tensor:
    """Mean over each group of ``samples`` rows of ``softmax(logits)[o]``: ``(B,) -> (B/S,)``."""
    p = torch.softmax(logits.float(), -1)[:, o]
    return p.reshape(-1, samples).mean(-1)


@torch.inference_mode()
def trace(
    lm: LoadedModel,
    prompt: str,
    subject: str,
    cfg: CausalTracingConfig | None = None,
    answer: str | None = None,
    progress: Callable[[float], bool | None] | None = None,
) -> TraceResult:
    """Trace one fact the fast way (see the module docstring).

    Args:
        lm: Loaded model.
        prompt: The fact's prompt (the answer should be the next token).
        subject: The subject, a substring of the prompt.
        cfg: Config (kinds, S, W, noise).
        answer: The gold answer, to record whether the model is correct (optional).
        progress: Called with the fraction done after each batch; returning ``False`` cancels
            (raises :class:`TraceCancelled`).

    Raises:
        ValueError: Subject not found / covering the prompt, prompt too long, bad config.
    """
    cfg = cfg or CausalTracingConfig()
    kinds = cfg.kind_list()
    t0 = time.perf_counter()
    sigma = noise_sigma(lm, cfg)  # before the lock: measuring it takes the lock
    with lm.lock:
        setup, runner = _prepare(lm, prompt, subject, cfg, sigma)
        S, L = cfg.samples, lm.n_layers
        n_tok = setup.ids.shape[1]
        clean = {
            k: torch.stack([runner.cache[f"blocks.{i}.{_KIND_HOOK[k]}"][0] for i in range(L)])
            for k in kinds
        }  # kind -> (L, T, D)
        # Corrupted run: S copies; cache every block's input and the last block's output.
        with lm.bridge.hooks(fwd_hooks=[("hook_embed", _noise_hook(setup, 0))]):
            logits, cache = lm.bridge.run_with_cache(
                setup.ids.repeat(S, 1),
                names_filter=lambda n: n.endswith(("hook_resid_pre", "hook_resid_post")),
            )
        corr_pre = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(L)]  # L x (S, T, D)
        corr_post = corr_pre[1:] + [cache[f"blocks.{L - 1}.hook_resid_post"]]
        p_corrupt = float(_prob(logits[:, -1], setup.answer_id, S)[0])
        positions = [t for t in traced_positions(cfg, n_tok, setup.b, setup.e) if t >= setup.b]
        scores = {k: torch.full((n_tok, L), p_corrupt) for k in kinds}
        if cfg.token_range != "all":
            keep = traced_positions(cfg, n_tok, setup.b, setup.e)
            for k in kinds:
                mask = torch.ones(n_tok, dtype=torch.bool)
                mask[keep] = False
                mask[: setup.b] = False
                scores[k][mask] = float("nan")
        per_batch = max(1, cfg.batch_seqs // S)
        jobs = [
            (k, layer, positions[i : i + per_batch])
            for k in kinds
            for layer in range(L)
            for i in range(0, len(positions), per_batch)
        ]
        for j, (kind, layer, pos) in enumerate(jobs):
            tpos = torch.tensor(pos, device=lm.device).repeat_interleave(S)  # (B,)
            rows = torch.arange(len(tpos), device=lm.device)
            if kind == "hidden":
                h = corr_post[layer].repeat(len(pos), 1, 1)  # (B, T, D)
                h[rows, tpos] = clean["hidden"][layer, tpos]
                out = runner.run(h, layer + 1)
            else:
                span = window_layers(layer, cfg.window, L)
                h = corr_pre[span.start].repeat(len(pos), 1, 1)  # (B, T, D)
                src = clean[kind]

                def restore(x, hook=None, i=0, tpos=tpos, rows=rows, src=src):
                    x[rows, tpos] = src[i, tpos].to(x.dtype)
                    return x

                hooks = [(f"blocks.{i}.{_KIND_HOOK[kind]}", _bind(restore, i)) for i in span]
                with lm.bridge.hooks(fwd_hooks=hooks):
                    out = runner.run(h, span.start)
            scores[kind][pos, layer] = _prob(out, setup.answer_id, S).cpu()
            if progress is not None and progress((j + 1) / len(jobs)) is False:
                raise TraceCancelled("Trace cancelled.")
    return TraceResult(
        ids=setup.ids[0].cpu(),
        tokens=lm.token_strs(setup.ids),
        subject_range=(setup.b, setup.e),
        answer_id=setup.answer_id,
        answer=lm.tokenizer.decode([setup.answer_id]),
        p_clean=setup.p_clean,
        p_corrupt=p_corrupt,
        sigma=setup.sigma,
        correct=answer_matches(lm, setup.answer_id, answer),
        scores=scores,
        seconds=time.perf_counter() - t0,
    )


def _bind(fn, i: int):
    """Fix the layer index of a restore hook (closures in loops capture late)."""
    return lambda x, hook=None: fn(x, hook, i=i)


@torch.inference_mode()
def trace_reference(
    lm: LoadedModel,
    prompt: str,
    subject: str,
    cfg: CausalTracingConfig | None = None,
    answer: str | None = None,
) -> TraceResult:
    """ROME's algorithm: for every (token, layer), a batch of ``S + 1`` copies from the first layer.

    Copy 0 is clean; copies 1..S get the same noise for every restoration, and the restored state
    of copies 1..S is overwritten with copy 0's value in place (METHODS.md B1 steps 2-7).
    """
    cfg = cfg or CausalTracingConfig()
    kinds = cfg.kind_list()
    t0 = time.perf_counter()
    sigma = noise_sigma(lm, cfg)  # before the lock: measuring it takes the lock
    with lm.lock:
        setup, _ = _prepare(lm, prompt, subject, cfg, sigma)
        S, L = cfg.samples, lm.n_layers
        n_tok = setup.ids.shape[1]
        batch = setup.ids.repeat(S + 1, 1)  # (S+1, T)
        noise = ("hook_embed", _noise_hook(setup, 1))
        logits = lm.bridge.run_with_hooks(batch, fwd_hooks=[noise])
        p_corrupt = float(_prob(logits[1:, -1], setup.answer_id, S)[0])

        def restore(x, hook=None, t=0):  # (S+1, T, D): copies 1..S take copy 0's state at t
            x[1:, t] = x[0, t]
            return x

        scores = {k: torch.full((n_tok, L), float("nan")) for k in kinds}
        for kind in kinds:
            for t in traced_positions(cfg, n_tok, setup.b, setup.e):
                for layer in range(L):
                    span = (
                        range(layer, layer + 1)
                        if kind == "hidden"
                        else window_layers(layer, cfg.window, L)
                    )
                    fn = _bind_t(restore, t)
                    hooks = [noise] + [(f"blocks.{i}.{_KIND_HOOK[kind]}", fn) for i in span]
                    out = lm.bridge.run_with_hooks(batch, fwd_hooks=hooks)
                    scores[kind][t, layer] = float(_prob(out[1:, -1], setup.answer_id, S)[0])
    return TraceResult(
        ids=setup.ids[0].cpu(),
        tokens=lm.token_strs(setup.ids),
        subject_range=(setup.b, setup.e),
        answer_id=setup.answer_id,
        answer=lm.tokenizer.decode([setup.answer_id]),
        p_clean=setup.p_clean,
        p_corrupt=p_corrupt,
        sigma=setup.sigma,
        correct=answer_matches(lm, setup.answer_id, answer),
        scores=scores,
        seconds=time.perf_counter() - t0,
    )


def _bind_t(fn, t: int):
    return lambda x, hook=None: fn(x, hook, t=t)


# ---------------------------------------------------------------------------------------------
# Rows


def fact_fields(item: Item) -> tuple[str, str]:
    """``(subject, answer)`` of a known_1000 row or a team fact."""
    f = item.fields
    subject = f.get("subject")
    if not subject:
        raise ValueError(f"Fact {item.prompt_id} has no subject.")
    return subject, f.get("attribute") or f.get("answer") or ""


def trace_records(r: TraceResult, n_layers: int, prompt_id: str, cfg: CausalTracingConfig) -> list:
    """Metric records of one trace.

    * per cell (``position = t``, ``grp`` = token group): ``p_restored`` and ``indirect_effect``;
    * per token group and layer (``position = -1``, so ``metrics_agg`` averages over facts, each
      fact's middle / further tokens averaged first): ``indirect_effect`` and ``p_restored``;
    * per fact (``layer_kind = fact``): ``p_clean``, ``p_corrupt``, ``total_effect``,
      ``correct``, ``noise_sigma``, ``subject_start``, ``subject_end``.
    """
    groups = r.groups()
    recs = []
    base = dict(prompt_id=prompt_id, layer_kind="block", n_layers=n_layers)
    for kind, grid in r.scores.items():
        for t in range(r.n_tokens):
            for layer in range(n_layers):
                p = float(grid[t, layer])
                if p != p:  # not traced (token_range)
                    continue
                recs.append(
                    dict(
                        base,
                        variant=kind,
                        position=t,
                        grp=groups[t],
                        layer=layer,
                        metric="p_restored",
                        value=p,
                        unit="prob",
                    )
                )
                recs.append(
                    dict(
                        base,
                        variant=kind,
                        position=t,
                        grp=groups[t],
                        layer=layer,
                        metric="indirect_effect",
                        value=p - r.p_corrupt,
                        unit="prob",
                    )
                )
        for g in TOKEN_GROUPS:
            rows = [t for t in range(r.n_tokens) if groups[t] == g]
            if not rows:
                continue
            vals = grid[rows].nanmean(0)  # (L,)
            for layer in range(n_layers):
                v = float(vals[layer])
                if v != v:
                    continue
                for metric, value in (("indirect_effect", v - r.p_corrupt), ("p_restored", v)):
                    recs.append(
                        dict(
                            base,
                            variant=kind,
                            position=-1,
                            grp=g,
                            layer=layer,
                            metric=metric,
                            value=value,
                            unit="prob",
                        )
                    )
    recs += fact_records(r, n_layers, prompt_id)
    return recs


def fact_records(r: TraceResult, n_layers: int, prompt_id: str) -> list[dict]:
    """Per-fact scalars (``layer_kind = fact``, ``layer = 0``)."""
    b, e = r.subject_range
    vals = {
        "p_clean": (r.p_clean, "prob"),
        "p_corrupt": (r.p_corrupt, "prob"),
        "total_effect": (r.p_clean - r.p_corrupt, "prob"),
        "noise_sigma": (r.sigma, "norm"),
        "subject_start": (b, "count"),
        "subject_end": (e, "count"),
        "answer_id": (r.answer_id, "count"),
    }
    if r.correct is not None:
        vals["correct"] = (float(r.correct), "fraction")
    return [
        dict(
            prompt_id=prompt_id,
            variant="",
            position=-1,
            grp="",
            layer=0,
            layer_kind="fact",
            n_layers=n_layers,
            metric=m,
            value=float(v),
            unit=u,
        )
        for m, (v, u) in vals.items()
    ]


def process(
    lm: LoadedModel, items: list[Item], cfg: CausalTracingConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Trace each fact the model answers correctly; record correctness for every fact."""
    from precompute.methods.logit_lens import prompt_frame

    recs, prompts, checks = [], [], []
    if cfg.sample_every > 1:
        items = [it for it in items if _id_number(it.prompt_id) % cfg.sample_every == 0]
    for item in items:
        subject, gold = fact_fields(item)
        try:
            r = trace(lm, item.text, subject, cfg, answer=gold or None)
        except ValueError as err:
            log.warning("skipping %s: %s", item.prompt_id, err)
            continue
        if r.correct is False:  # recorded, not traced further (ROME keeps correct facts only)
            r.scores = {}
        recs += trace_records(r, lm.n_layers, item.prompt_id, cfg)
        prompts.append(prompt_frame(lm, ctx, item, r.ids))
        checks.append(
            dict(
                model=ctx.model,
                method=ctx.method,
                dataset=ctx.dataset,
                prompt_id=item.prompt_id,
                subject=subject,
                gold=gold,
                prediction=r.answer,
                prediction_id=r.answer_id,
                p_prediction=r.p_clean,
                correct=bool(r.correct),
                subject_start=r.subject_range[0],
                subject_end=r.subject_range[1],
                run_id=ctx.run_id,
            )
        )
    df = ctx.metrics(recs)
    if len(df):
        df.loc[df["layer_kind"] == "fact", "rel_depth"] = 0.0
    out = {"metrics": df}
    if prompts:
        out["prompts"] = pd.concat(prompts)
        out["fact_checks"] = pd.DataFrame(checks)
    return out


def _id_number(prompt_id: str) -> int:
    m = re.search(r"(\d+)$", prompt_id)
    return int(m.group(1)) if m else 0


def _split_live_prompt(prompt: str) -> tuple[str, str]:
    """``run-one`` prompts mark the subject in brackets: ``"[Eiffel Tower] is in the city of"``."""
    if "[" not in prompt or "]" not in prompt:
        raise ValueError("Mark the subject in brackets, e.g. '[The Eiffel Tower] is located in'.")
    i, j = prompt.index("["), prompt.index("]")
    subject = prompt[i + 1 : j]
    return prompt[:i] + subject + prompt[j + 1 :], subject


def run_one(lm: LoadedModel, prompt: str, cfg: CausalTracingConfig) -> pd.DataFrame:
    """Tidy rows for one prompt whose subject is marked in brackets (``run-one``)."""
    text, subject = _split_live_prompt(prompt)
    r = trace(lm, text, subject, cfg)
    return result_frame(lm, r)


def result_frame(lm: LoadedModel, r: TraceResult) -> pd.DataFrame:
    """Per-cell rows of a trace (for live heatmaps): kind, position, token, layer, p_restored."""
    groups = r.groups()
    rows = []
    for kind, grid in r.scores.items():
        for t in range(r.n_tokens):
            for layer in range(lm.n_layers):
                rows.append(
                    dict(
                        kind=kind,
                        position=t,
                        input_token=r.tokens[t],
                        grp=groups[t],
                        layer=layer,
                        rel_depth=layer / max(lm.n_layers - 1, 1),
                        p_restored=float(grid[t, layer]),
                        indirect_effect=float(grid[t, layer]) - r.p_corrupt,
                        subject=r.subject_range[0] <= t < r.subject_range[1],
                        p_clean=r.p_clean,
                        p_corrupt=r.p_corrupt,
                        answer=r.answer,
                    )
                )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Benchmark

BENCH_FACTS = [
    ("The capital of France is the city of", "France"),
]


def bench_causal_tracing(model_name: str, args) -> dict:
    """Time the reference (ROME) and fast traces on the same facts and noise, and a live trace.

    ``STAGESCOPE_CT_BENCH_KINDS`` (default ``hidden,mlp,attn``) picks the kinds compared.
    """
    from precompute.model.load import load_model

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    kinds = os.environ.get("STAGESCOPE_CT_BENCH_KINDS", "hidden,mlp,attn")
    cfg = CausalTracingConfig(kinds=kinds)
    reference_s = fast_s = 0.0
    diff = 0.0
    for text, subject in BENCH_FACTS:
        reference_sigma(lm, cfg.noise_ref)  # measured once, outside the timings
        ref = trace_reference(lm, text, subject, cfg)
        fast = trace(lm, text, subject, cfg)
        reference_s += ref.seconds
        fast_s += fast.seconds
        for k in ref.scores:
            diff = max(diff, float((ref.scores[k] - fast.scores[k]).abs().max()))
    live_text, live_subject = "The Statue of Liberty is located in the city of", "Statue of Liberty"
    live = trace(lm, live_text, live_subject, CausalTracingConfig(kinds="hidden"))
    return {
        "model": model_name,
        "facts": len(BENCH_FACTS),
        "kinds": cfg.kinds,
        "samples": cfg.samples,
        "window": cfg.window,
        "reference_seconds": round(reference_s, 3),
        "fast_seconds": round(fast_s, 3),
        "speedup": round(reference_s / fast_s, 2),
        "max_abs_diff": diff,
        "live_trace_seconds": round(live.seconds, 3),
        "live_trace_tokens": live.n_tokens,
        "matmul_gflops_f32": round(matmul_peak_flops() / 1e9, 1),
        "torch_threads": torch.get_num_threads(),
    }


METHOD = Method(
    name="causal_tracing",
    summary="Causal tracing (ROME): restore clean states into a subject-corrupted run.",
    config_cls=CausalTracingConfig,
    dataset="facts",
    process=process,
    run_one=run_one,
    chunk_size=4,
    benches={"causal-tracing": bench_causal_tracing},
)
