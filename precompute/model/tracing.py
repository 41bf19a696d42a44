"""Causal tracing's engine (METHODS.md B1; ROME): corrupt the subject, restore clean states.

The method module ``precompute.methods.causal_tracing`` holds the rows, the reference algorithm
and the registry entry; this module holds the config, the noise and the fast trace, all through
the one block replay (``precompute.model.replay``) and the one fact prompt (``precompute.facts``).

The fast trace uses the structure of the intervention (ROME's numbers, tested against
``trace_reference``): a restoration at block ``l`` and token ``p`` changes no block below ``l``
and no position before ``p``. Restorations before the subject give ``p_corrupt`` (not run); the
others start from the corrupted run at their first block and compute positions ``p..T-1`` only,
with the corrupted run's keys and values of the positions before ``p``; the ``S`` noise samples
and every layer of one token share a batch; only the last position is read out
(``trace_parts.restored_logits``; architectures without a key/value cache replay every position
from the restored block, one layer's tokens per batch). The clean and corrupted runs are shared
by the kinds. The model's lock is held one block at a time, so other sessions' short requests
are served during a long trace.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> r = trace(lm, "The Eiffel Tower is located in the city of", "Eiffel Tower",
    ...           CausalTracingConfig(kinds="hidden", noise_sigma=1.0))
    >>> r.scores["hidden"].shape == (r.n_tokens, lm.n_layers)
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from precompute.facts import (
    FactPrompt,
    answer_matches,
    parse_windows,
    subject_tokens,
    token_groups,
    window_layers,
)
from precompute.model.load import LoadedModel
from precompute.model.replay import Replay, capture, forward, read_out, run_from
from precompute.model.threads import intra_op_threads
from precompute.model.trace_parts import (
    KIND_HOOK,
    KINDS,
    TraceFrame,
    corrupted_run,
    embedding_sigma,
    make_noise,
    mean_prob,
    noise_hook,
    plan,
    plan_positions,
    prefix_kv,
    reference_sigma,
    restore_hook,
    restored_logits,
    traced_positions,
)
from precompute.types import BaseConfig, option

__all__ = [
    "CausalTracingConfig",
    "Setup",
    "TraceCancelled",
    "TraceFrame",
    "TraceResult",
    "embedding_sigma",
    "make_noise",
    "mean_prob",
    "noise_hook",
    "noise_sigma",
    "plan",
    "prepare",
    "reference_sigma",
    "result",
    "trace",
    "trace_frames",
    "traced_positions",
]

#: A fact's corruption failed when ``p_corrupt > CORRUPTION_MAX_RATIO * p_clean``.
CORRUPTION_MAX_RATIO = 0.5


@dataclass(frozen=True)
class CausalTracingConfig(BaseConfig):
    """Defaults.

    ``samples`` S = 10, ``noise_scale`` 3 (nu = 3 sigma), ``seed`` 1 (``RandomState(1)``) and
    "correct facts only" are ROME's (METHODS.md B1, G). ``window`` = ``auto``: about a fifth of
    the blocks (ROME's W = 10 of 48; ``facts.scaled_window``), recorded per fact as a ``window``
    row; a number sets W (``1`` restores one layer). Was 10 for every model (56 % of Gemma-3's 18).
    Ours: ``n_items`` = 24 facts (CPU budget); ``noise_ref`` = the subjects of the team's facts file
    (ROME measures sigma over the subjects of the file it traces; a fixed reference set gives every
    chunk and every live trace the same sigma); ``noise_sigma`` > 0 overrides the measured sigma;
    ``token_range`` = ``all`` (``subject_last`` traces only the last subject token and the last
    token, ROME's cheap teaching mode); ``max_tokens`` = 32 (live limit); ``batch_seqs`` = 320
    (rows per step); ``stride`` = k tries ``items[::k]`` of the dataset (was ``sample_every``);
    ``order`` = ``relations`` tries them round-robin over relations (``file``: dataset order;
    ``causal_tracing.tried_order``); ``n_correct`` = 0: stop once this many were answered
    correctly and traced (0: no limit; issue 10: ``n_items=185,n_correct=60``).
    """

    RENAMED: ClassVar[dict[str, str]] = {"sample_every": "stride"}

    n_items: int = 24
    samples: int = 10
    noise_scale: float = 3.0
    noise_sigma: float = 0.0
    noise_ref: str = "facts"
    window: str = "auto"
    kinds: str = "hidden,mlp,attn"
    token_range: str = "all"
    seed: int = 1
    max_tokens: int = 32
    batch_seqs: int = 320
    stride: int = 1
    order: str = option("relations", choices=("relations", "file"))
    n_correct: int = option(0, lo=0)

    def with_overrides(self, overrides: dict[str, str]) -> CausalTracingConfig:
        """As ``BaseConfig.with_overrides``; also checks ``window`` and ``kinds`` (``--set``)."""
        out = super().with_overrides(overrides)
        out.window_for(1)
        out.kind_list()
        return out  # type: ignore[return-value]

    def window_for(self, n_layers: int) -> int:
        """The window W for a model of ``n_layers`` blocks (``auto`` scales it to the depth)."""
        windows = parse_windows(self.window, n_layers)
        if len(windows) != 1:
            raise ValueError(f"Causal tracing takes one window, got {self.window!r}.")
        return windows[0][1]

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
        window: The window W used for ``mlp`` / ``attn``.
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
    window: int = 0

    @property
    def corruption_ok(self) -> bool:
        """The noise worked: ``p_corrupt <= CORRUPTION_MAX_RATIO * p_clean`` (our rule).

        A fact whose corrupted probability stays above half the clean one has nothing to
        restore; it is recorded but left out of the averages.
        """
        return self.p_corrupt <= CORRUPTION_MAX_RATIO * self.p_clean

    @property
    def n_tokens(self) -> int:
        """Number of tokens ``T``."""
        return int(self.ids.shape[0])

    def groups(self) -> list[str]:
        """Return the token group of every position (ROME's averaging groups)."""
        return token_groups(self.n_tokens, *self.subject_range)


# ---------------------------------------------------------------------------------------------
# One fact


def noise_sigma(lm: LoadedModel, cfg: CausalTracingConfig) -> float:
    """Return the sigma the noise is scaled by: the config's, else measured (takes ``lm.lock``)."""
    return cfg.noise_sigma if cfg.noise_sigma > 0 else reference_sigma(lm, cfg.noise_ref)


@dataclass
class Setup:
    """A fact ready to trace: its tokens, subject span, noise and clean answer."""

    fact: FactPrompt
    noise: torch.Tensor  # (S, e-b, D)
    answer_id: int
    p_clean: float
    sigma: float

    @property
    def ids(self) -> torch.Tensor:
        """``(1, T)`` token ids."""
        return self.fact.ids


def prepare(
    lm: LoadedModel,
    prompt: str,
    subject: str | None,
    cfg: CausalTracingConfig,
    char_span: tuple[int, int] | None = None,
) -> tuple[Setup, Replay]:
    """Locate the subject, run the clean pass (keeping the traced activations), draw the noise."""
    fact = subject_tokens(lm, prompt, subject, char_span)
    if fact.n_tokens > cfg.max_tokens:
        raise ValueError(
            f"The prompt has {fact.n_tokens} tokens; causal tracing takes at most "
            f"{cfg.max_tokens}. Shorten it to one sentence that ends where the answer should come."
        )
    if cfg.samples < 1:
        raise ValueError("samples must be at least 1.")
    cfg.window_for(lm.n_layers)  # a bad window is refused before any forward pass
    sigma = noise_sigma(lm, cfg)
    names = [f"blocks.{i}.{KIND_HOOK[k]}" for k in cfg.kind_list() for i in range(lm.n_layers)]
    rep = capture(lm, fact.ids, names=names)
    probs = torch.softmax(rep.logits[-1], -1)  # (V,)
    o = int(probs.argmax())
    noise = make_noise(cfg, fact.end - fact.start, lm.d_model, sigma).to(lm.device)
    return Setup(fact, noise, o, float(probs[o]), sigma), rep


def result(
    lm: LoadedModel, setup: Setup, p_corrupt: float, scores: dict, answer, t0: float, window: int
) -> TraceResult:
    """Assemble a :class:`TraceResult`."""
    return TraceResult(
        ids=setup.ids[0].cpu(),
        tokens=lm.token_strs(setup.ids),
        subject_range=(setup.fact.start, setup.fact.end),
        answer_id=setup.answer_id,
        answer=lm.tokenizer.decode([setup.answer_id]),
        p_clean=setup.p_clean,
        p_corrupt=p_corrupt,
        sigma=setup.sigma,
        correct=answer_matches(lm, setup.answer_id, answer),
        scores=scores,
        seconds=time.perf_counter() - t0,
        window=window,
    )


@torch.inference_mode()
def trace_frames(
    lm: LoadedModel,
    prompt: str,
    subject: str | None,
    cfg: CausalTracingConfig | None = None,
    answer: str | None = None,
    char_span: tuple[int, int] | None = None,
    coarse_first: bool = True,
    threads: int | None = None,
) -> Iterator[TraceFrame]:
    """Trace one fact the fast way (module docstring), yielding a :class:`TraceFrame` per step.

    Stop by no longer iterating (``close()``): no more steps run. Every cell is computed by one
    locked replay step, so the last frame's scores are the trace's (``coarse_first`` only orders
    the steps, :func:`plan`; ``tests/test_live_speed.py`` checks that they are equal).
    ``threads``: intra-op threads for the steps (the live panel uses 1: one core for the trace,
    the other for other students' requests; ``precompute.model.threads``).

    Raises:
        ValueError: Subject not found / covering the prompt, prompt too long, bad config.
    """
    cfg = cfg or CausalTracingConfig()
    kinds = cfg.kind_list()
    t0 = time.perf_counter()
    n_threads = threads or torch.get_num_threads()
    with intra_op_threads(n_threads):
        setup, rep = prepare(lm, prompt, subject, cfg, char_span)
    S, L = cfg.samples, lm.n_layers
    window = cfg.window_for(L)
    b, e = setup.fact.start, setup.fact.end
    n_tok = setup.fact.n_tokens
    clean = {
        k: torch.stack([rep.cache[f"blocks.{i}.{KIND_HOOK[k]}"] for i in range(L)]) for k in kinds
    }
    noised = [("hook_embed", noise_hook(setup, 0))]
    with intra_op_threads(n_threads):
        kv = prefix_kv(lm, rep, b)  # None: the architecture replays every position
        names = [f"blocks.{i}.hook_resid_pre" for i in range(L if kv is None else 1)]
        names += [f"blocks.{L - 1}.hook_resid_post"] if kv is None else []
        logits, cache = forward(lm, setup.ids.repeat(S, 1), fwd_hooks=noised, names=names)
        logits = logits[:, -1]
        if kv is not None:  # the corrupted copies' blocks run again from the subject on
            cor = corrupted_run(lm, rep, kv, cache["blocks.0.hook_resid_pre"][:, b:])
            logits = read_out(lm, cor.states[-1][:, -1])
    p_corrupt = float(mean_prob(logits, setup.answer_id, S)[0])
    keep = traced_positions(cfg, n_tok, b, e)
    positions = [t for t in keep if t >= b]
    scores = {k: torch.full((n_tok, L), float("nan")) for k in kinds}
    cells = {k: torch.zeros((n_tok, L), dtype=torch.bool) for k in kinds}
    for k in kinds:  # before the subject: p_corrupt exactly; not traced (token_range): NaN
        scores[k][:b] = p_corrupt
        cells[k][[t for t in range(n_tok) if t not in positions]] = True
    per_batch = max(1, cfg.batch_seqs // S)
    if kv is None:
        steps = plan(kinds, L, positions, per_batch, coarse_first)
        corr_pre = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(L)]  # L x (S, T, D)
        corr_post = corr_pre[1:] + [cache[f"blocks.{L - 1}.hook_resid_post"]]
    else:
        steps = plan_positions(kinds, L, positions, per_batch, coarse_first)

    def frame(done: int) -> TraceFrame:
        res = result(
            lm, setup, p_corrupt, {k: v.clone() for k, v in scores.items()}, answer, t0, window
        )
        return TraceFrame(res, done, len(steps), {k: v.clone() for k, v in cells.items()})

    yield frame(0)
    for j, (kind, layer, pos) in enumerate(steps):  # one replay step each
        with intra_op_threads(n_threads):
            if kv is not None:  # (kind, layers, position): from the restored token on
                out = restored_logits(lm, rep, cor, kind, pos, layer, clean[kind], window)
            else:  # (kind, layer, positions): every position from the restored layer on
                out = _full_step(lm, rep, kind, layer, pos, clean, corr_pre, corr_post, window, S)
        scores[kind][pos, layer] = mean_prob(out, setup.answer_id, S).cpu()
        cells[kind][pos, layer] = True
        yield frame(j + 1)


def _full_step(lm, rep, kind, layer, pos, clean, corr_pre, corr_post, window, S) -> torch.Tensor:
    """One locked step of restorations at ``layer``, tokens ``pos``: all positions replayed."""
    tpos = torch.tensor(pos, device=lm.device).repeat_interleave(S)  # (B,)
    rows = torch.arange(len(tpos), device=lm.device)
    if kind == "hidden":
        h = corr_post[layer].repeat(len(pos), 1, 1)  # (B, T, D)
        h[rows, tpos] = clean["hidden"][layer, tpos]
        return run_from(lm, rep, h, layer + 1)
    span = window_layers(layer, window, lm.n_layers)
    hooks = [
        (f"blocks.{i}.{KIND_HOOK[kind]}", restore_hook(clean[kind], i, rows, tpos)) for i in span
    ]
    return run_from(lm, rep, corr_pre[span.start].repeat(len(pos), 1, 1), span.start, hooks)


def trace(
    lm: LoadedModel,
    prompt: str,
    subject: str | None,
    cfg: CausalTracingConfig | None = None,
    answer: str | None = None,
    progress: Callable[[float], bool | None] | None = None,
    char_span: tuple[int, int] | None = None,
) -> TraceResult:
    """Trace one fact the fast way: the last frame of :func:`trace_frames`, steps in order.

    Args:
        lm: Loaded model.
        prompt: The fact's prompt (the answer should be the next token).
        subject: The subject, a substring of the prompt (or give ``char_span``).
        cfg: Config (kinds, S, W, noise).
        answer: The gold answer, to record whether the model is correct (optional).
        progress: Called with the fraction done after each batch; returning ``False`` cancels
            (raises :class:`TraceCancelled`).
        char_span: The picked subject's character span in ``prompt`` (wins over ``subject``).

    Raises:
        ValueError: Subject not found / covering the prompt, prompt too long, bad config.
    """
    frames = trace_frames(lm, prompt, subject, cfg, answer, char_span, coarse_first=False)
    for fr in frames:
        if fr.done and progress is not None and progress(fr.fraction) is False:
            frames.close()
            raise TraceCancelled("Trace cancelled.")
    return fr.result
