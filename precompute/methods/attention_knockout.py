"""Attention knockout (METHODS.md B2; Geva et al. 2023): when is a fact moved to the last token.

For a fact prompt with subject tokens ``E = [b, e)`` and last position ``q = T-1``, block the
attention edges *into* ``q`` from one set of keys, in a window of ``W`` layers around each centre
layer ``l`` (``[max(0, l - W//2), min(L, l + ceil(W/2)))``), in every head, by setting the
pre-softmax score to -inf so the remaining keys are renormalised. The key sets (``grp``):

* ``subject``: the subject tokens ``E``;
* ``non_subject``: every key ``0 < j < q`` outside ``E`` (position 0 is its own set: before
  2026-11 it was included here, and cutting the attention sink alone made most of the
  "non-subject hurts early" effect);
* ``last``: ``q`` itself;
* ``first``: position 0, the start token (``precompute.model.start``; the attention sink); an
  empty set only for a prompt whose subject sits at position 0 (none since the start-token rule).

Windows (``window``): ``auto`` is about a fifth of the blocks (``facts.scaled_window``, the papers'
9-10 of 48), recorded per fact as a ``window`` summary row, variant ``Wauto``; a number ``W`` gives
variant ``W{W}``. The default ``auto,1`` draws the W = 1 curves beside the scaled ones.

The read-out is the clean prediction ``o = argmax p(. | prompt)`` (GEVA, not the gold string):
``relative_diff_pct = 100 (p_new(o) - p_base(o)) / p_base(o)``. Two implementations that must agree
(tested): ``impl="mask"`` edits the additive attention mask each attention layer receives (GEVA's
``finfo.min`` mask), ``impl="score_hook"`` writes -inf into ``blocks.{i}.attn.hook_attn_scores``
(TransformerLens's pre-softmax scores, after the causal mask; RAGER's approach). In grouped-query
models (Llama, Gemma) keys and values are shared by groups of query heads, but scores are per query
head, so the cut is applied to every query head. A query never loses all its keys: ``subject`` and
``non_subject`` leave ``q`` itself, and ``last`` leaves every earlier key (checked, else NaN).

Rows (``metrics``, ``layer_kind = "window_center"``, ``grp`` = key set, ``variant`` = window):
``relative_diff_pct`` (percent), ``p_new`` and ``p_base`` (prob) per fact and centre layer.
Per fact, ``layer_kind = "summary"`` rows (``layer = -1``, ``rel_depth = -1``, not a depth):
``answer_correct`` (1 when the model's top token is the answer's first token; only those facts are
knocked out, the others are recorded with 0 so accuracy is visible), ``subject_found`` (0 when the
subject is not in the prompt) and ``subject_at_pos0`` (GEVA records it: without a BOS token, a
subject at position 0 removes the attention sink; always 0 since every prompt opens with the start
token, ``precompute.model.start``).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> prompt = "The Eiffel Tower is located in the city of"
    >>> r = knockout_fact(lm, prompt, "Eiffel Tower", window=3)
    >>> sorted(r.rel_diff) == ["first", "last", "non_subject", "subject"]
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from precompute.facts import (
    FACT_ORDERS,
    FactPrompt,
    answer_matches,
    fact_check_row,
    fact_parts,
    facts_in_order,
    metrics_frame,
    parse_windows,
    prompt_row,
    split_marked,
    subject_tokens,
    summary_record,
    window_layers,
)
from precompute.methods import Method
from precompute.model.knockout import Cut, knockout_logprobs
from precompute.model.load import LoadedModel
from precompute.model.replay import top_token
from precompute.types import BaseConfig, Item, RunContext, option, rel_depth

BLOCK_SETS = ("subject", "non_subject", "last", "first")


@dataclass(frozen=True)
class KnockoutConfig(BaseConfig):
    """Defaults.

    ``window`` = ``auto,1``: about a fifth of the blocks (GEVA's notebook uses 9 of GPT-2 XL's
    48; seed 000 uses 4, i.e. 5 inclusive layers), and W = 1 beside it (was 9 for every model).
    ``impl`` = score hook (ours; the mask path gives the same numbers, tested).
    ``use_cache`` = True: the clean prefix's keys/values are reused (ours; same numbers, tested).
    ``n_items`` = 2000 (ours: every fact of the file -- the team's 185, ``facts_known``'s 1,378;
    only correct facts are knocked out; was 185, which cut ``facts_known`` to the team's facts).
    ``max_tokens`` = 64 (ours: fact prompts are short; longer prompts are refused, not cut,
    because cutting would move the last position).
    ``chunk_elems`` bounds the logits held at once (ours; Gemma's vocabulary is 262k).
    ``stride`` = 1: knock out every ``stride``-th fact only. ``order`` = "relations" (ours): facts
    are tried round-robin over relations (:func:`precompute.facts.facts_in_order`), so a run that
    stops at ``n_correct`` spans every relation of a file sorted by relation; "dataset": file order.
    ``n_correct`` = 0: stop once this many facts were answered correctly (0: try all ``n_items``;
    ours: ``--dataset facts_known --set n_correct=300`` gives the issue's 300 correct facts).
    ``subject`` is used by ``run-one`` only (or mark it in brackets in the prompt).
    """

    window: str = "auto,1"
    impl: str = "score_hook"
    use_cache: bool = True
    n_items: int = 2000
    stride: int = 1
    order: str = option("relations", choices=FACT_ORDERS)
    max_tokens: int = 64
    chunk_elems: int = 2**24
    n_correct: int = field(default=0, metadata={"lo": 0})
    subject: str = ""

    def with_overrides(self, overrides: dict[str, str]) -> KnockoutConfig:
        """As ``BaseConfig.with_overrides``; also checks ``window`` (``--set window=auto,1``)."""
        out = super().with_overrides(overrides)
        parse_windows(out.window, 1)
        return out  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# The knockout itself


def block_keys(grp: str, start: int, end: int, query: int) -> list[int]:
    """Keys whose edge into ``query`` a key set blocks (one of ``BLOCK_SETS``)."""
    if grp == "subject":
        return list(range(start, end))
    if grp == "non_subject":
        return [j for j in range(1, query) if not start <= j < end]
    if grp == "last":
        return [query]
    if grp == "first":
        return [] if start <= 0 < end or query == 0 else [0]
    raise ValueError(f"Unknown key set {grp!r}; use one of {BLOCK_SETS}.")


@dataclass
class KnockoutResult:
    """Knockout curves of one fact.

    Attributes:
        fact: The tokenised prompt and subject span.
        target_id: The clean prediction ``o``; target_str its text.
        p_base: Clean probability of ``o``.
        p_new: Per key set, ``(L,)`` probability of ``o`` with the window centred on each layer.
        rel_diff: Per key set, ``(L,)`` relative change in percent.
        window: ``W``.
        correct: Whether ``o`` is the given answer (``None`` when no answer was given).
        variant: The rows' ``variant`` (``Wauto`` for a scaled window); default ``W{W}``.
    """

    fact: FactPrompt
    target_id: int
    target_str: str
    p_base: float
    p_new: dict[str, list[float]]
    rel_diff: dict[str, list[float]]
    window: int
    correct: bool | None = None
    variant: str = ""

    @property
    def subject_at_pos0(self) -> bool:
        """The subject starts at position 0 (no BOS before it: no attention sink left)."""
        return self.fact.start == 0


def clean_prediction(lm: LoadedModel, fact: FactPrompt) -> tuple[int, float]:
    """Return the clean top token at the last position and its probability."""
    return top_token(lm, fact.ids)


def knockout_fact(
    lm: LoadedModel,
    prompt: str,
    subject: str | None = None,
    window: int = 9,
    answer: str | None = None,
    impl: str = "score_hook",
    char_span: tuple[int, int] | None = None,
    max_tokens: int | None = 64,
    chunk_elems: int = 2**24,
    fact: FactPrompt | None = None,
    use_cache: bool = True,
    groups: Sequence[str] = BLOCK_SETS,
    variant: str = "",
) -> KnockoutResult:
    """Knock out each edge set into the last position, window centred on every layer.

    Args:
        lm: Loaded model.
        prompt: Fact prompt, ending where the answer would follow.
        subject: Subject text (or give ``char_span``, or a ready ``fact``).
        window: ``W`` layers per knockout (0: nothing is blocked).
        answer: Optional gold answer; only sets ``correct`` (the read-out is the clean argmax).
        impl: ``score_hook`` or ``mask``.
        char_span: Subject character span in ``prompt``.
        max_tokens: Longest prompt accepted.
        chunk_elems: Logits held at once.
        fact: A prompt already tokenised by ``subject_tokens``.
        use_cache: Reuse the clean prefix's keys and values (see ``knockout_logprobs``).
        groups: Key sets to cut (``BLOCK_SETS``); an empty set (``first`` when the subject starts
            the prompt) gets NaN curves.
        variant: The rows' ``variant`` (default ``W{window}``).

    Returns:
        The curves: ``G x L`` knocked-out probabilities in ``1 + G L`` sequence forwards.

    Raises:
        ValueError: Bad subject or prompt (see ``subject_tokens``), or a negative window.
    """
    if window < 0:
        raise ValueError(f"The window must be >= 0 layers, got {window}.")
    if fact is None:
        fact = subject_tokens(lm, prompt, subject, char_span, max_tokens)
    q, n_layers = fact.n_tokens - 1, lm.n_layers
    keys = {g: tuple(block_keys(g, fact.start, fact.end, q)) for g in groups}
    cut_sets = [g for g in groups if keys[g]]
    cuts = [Cut((), ())] + [  # row 0 is the clean run, in the same batch as the knockouts
        Cut(tuple(window_layers(c, window, n_layers)), keys[g])
        for g in cut_sets
        for c in range(n_layers)
    ]
    logp = knockout_logprobs(
        lm, fact.ids, cuts, impl=impl, chunk_elems=chunk_elems, use_cache=use_cache
    )  # (1 + G L, V)
    target = int(logp[0].argmax())
    p_base = float(logp[0, target].exp())
    p_new = logp[1:, target].exp().view(len(cut_sets), n_layers)  # (G, L)
    rel = 100.0 * (p_new - p_base) / p_base
    nan = [float("nan")] * n_layers
    return KnockoutResult(
        fact=fact,
        target_id=target,
        target_str=lm.tokenizer.decode([target]),
        p_base=p_base,
        p_new={g: p_new[cut_sets.index(g)].tolist() if keys[g] else nan for g in groups},
        rel_diff={g: rel[cut_sets.index(g)].tolist() if keys[g] else nan for g in groups},
        window=window,
        correct=answer_matches(lm, target, answer),
        variant=variant,
    )


# ------------------------------------------------------------------------------------------------
# Rows


def result_records(r: KnockoutResult, n_layers: int, prompt_id: str) -> list[dict]:
    """Per (key set, centre layer): relative_diff_pct, p_new, p_base; plus the summary rows.

    An empty key set (NaN curve) writes no rows.
    """
    recs = []
    variant = r.variant or f"W{r.window}"
    for grp in r.rel_diff:
        if any(math.isnan(v) for v in r.rel_diff[grp]):
            continue
        for layer in range(n_layers):
            depth = rel_depth(layer, "window_center", n_layers)
            for metric, value, unit in (
                ("relative_diff_pct", r.rel_diff[grp][layer], "percent"),
                ("p_new", r.p_new[grp][layer], "prob"),
                ("p_base", r.p_base, "prob"),
            ):
                recs.append(
                    dict(
                        prompt_id=prompt_id,
                        variant=variant,
                        position=-1,  # the last position (METHODS.md 0.3; metrics_agg reads -1)
                        layer=layer,
                        layer_kind="window_center",
                        n_layers=n_layers,
                        rel_depth=depth,
                        grp=grp,
                        metric=metric,
                        value=float(value),
                        unit=unit,
                    )
                )
    recs.append(
        summary_record(
            prompt_id, n_layers, "subject_at_pos0", r.subject_at_pos0, "fraction", variant
        )
    )
    recs.append(summary_record(prompt_id, n_layers, "window", r.window, "count", variant))
    return recs


def process(
    lm: LoadedModel, items: list[Item], cfg: KnockoutConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: knockout curves of every fact the model answers correctly.

    Facts are tried in ``cfg.order`` (of ``items[::stride]``) until ``n_correct`` were answered
    correctly (``facts.answer_matches``; 0: no limit). Every fact tried gets one summary row:
    ``subject_found = 0`` when its subject cannot be located (or its prompt is too long), else
    ``answer_correct`` (1 kept and knocked out, 0 not): tried = their count, kept = the sum.
    """
    recs, prompts, checks = [], [], []
    n_layers = lm.n_layers
    windows = parse_windows(cfg.window, n_layers)
    variant = windows[0][0]  # the main window labels the per-fact summary rows
    kept = 0
    for item in (items[i] for i in facts_in_order(items, cfg.order, cfg.stride)):
        if cfg.n_correct > 0 and kept >= cfg.n_correct:
            break
        pid = item.prompt_id
        prompt, subject, answer, _ = fact_parts(item)
        try:
            fact = subject_tokens(lm, prompt, subject, max_tokens=cfg.max_tokens)
        except ValueError:
            recs.append(summary_record(pid, n_layers, "subject_found", 0, "fraction", variant))
            continue
        target, p_target = clean_prediction(lm, fact)
        correct = bool(answer_matches(lm, target, answer))
        checks.append(fact_check_row(lm, ctx, item, fact, target, p_target))
        recs.append(summary_record(pid, n_layers, "answer_correct", correct, "fraction", variant))
        if not correct:
            continue
        kept += 1
        for name, w in windows:
            r = knockout_fact(
                lm,
                prompt,
                window=w,
                answer=answer,
                impl=cfg.impl,
                use_cache=cfg.use_cache,
                chunk_elems=cfg.chunk_elems,
                fact=fact,
                variant=name,
            )
            recs += result_records(r, n_layers, pid)
        prompts.append(prompt_row(lm, ctx, pid, fact.text, fact.ids))
    out = {"metrics": metrics_frame(ctx, recs)}
    if prompts:
        out["prompts"] = pd.DataFrame(prompts)
    if checks:
        out["fact_checks"] = pd.DataFrame(checks)
    return out


def result_frame(r: KnockoutResult, n_layers: int, model: str) -> pd.DataFrame:
    """Tidy rows of one live knockout (the ``metrics`` columns)."""
    ctx = RunContext(model=model, method="attention_knockout", dataset="live")
    return metrics_frame(ctx, result_records(r, n_layers, "live"))


def run_one(lm: LoadedModel, prompt: str, cfg: KnockoutConfig) -> pd.DataFrame:
    """Knockout curves for one prompt: subject in brackets, or named with ``--set subject=``."""
    subject = cfg.subject
    if not subject:
        prompt, subject = split_marked(prompt)
    fact = subject_tokens(lm, prompt, subject, max_tokens=cfg.max_tokens)
    frames = []
    for name, w in parse_windows(cfg.window, lm.n_layers):
        r = knockout_fact(
            lm,
            prompt,
            window=w,
            impl=cfg.impl,
            use_cache=cfg.use_cache,
            chunk_elems=cfg.chunk_elems,
            fact=fact,
            variant=name,
        )
        frames.append(result_frame(r, lm.n_layers, lm.name))
    return pd.concat(frames, ignore_index=True)


METHOD = Method(
    name="attention_knockout",
    summary="Attention knockout: cut subject / non-subject / last / first edges into the last.",
    config_cls=KnockoutConfig,
    dataset="facts",
    process=process,
    run_one=run_one,
    chunk_size=None,  # ``stride`` picks facts across the whole file
)
