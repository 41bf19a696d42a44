"""Attention knockout (METHODS.md B2; Geva et al. 2023): when is a fact moved to the last token.

For a fact prompt with subject tokens ``E = [b, e)`` and last position ``q = T-1``, block the
attention edges *into* ``q`` from one set of keys, in a window of ``W`` layers around each centre
layer ``l`` (``[max(0, l - W//2), min(L, l + ceil(W/2)))``), in every head, by setting the
pre-softmax score to -inf so the remaining keys are renormalised. The key sets (``grp``):

* ``subject``: the subject tokens ``E``;
* ``non_subject``: every key ``j < q`` outside ``E``;
* ``last``: ``q`` itself.

The read-out is the clean prediction ``o = argmax p(. | prompt)`` (GEVA, not the gold string):
``relative_diff_pct = 100 (p_new(o) - p_base(o)) / p_base(o)``. Two implementations that must agree
(tested): ``impl="mask"`` edits the additive attention mask each attention layer receives (GEVA's
``finfo.min`` mask), ``impl="score_hook"`` writes -inf into ``blocks.{i}.attn.hook_attn_scores``
(TransformerLens's pre-softmax scores, after the causal mask; RAGER's approach). In grouped-query
models (Llama, Gemma) keys and values are shared by groups of query heads, but scores are per query
head, so the cut is applied to every query head. A query never loses all its keys: ``subject`` and
``non_subject`` leave ``q`` itself, and ``last`` leaves every earlier key (checked, else NaN).

Rows (``metrics``, ``layer_kind = "window_center"``, ``grp`` = key set, ``variant = "W{W}"``):
``relative_diff_pct`` (percent), ``p_new`` and ``p_base`` (prob) per fact and centre layer.
Per fact, ``layer_kind = "summary"`` rows (``layer = -1``, ``rel_depth = -1``, not a depth):
``answer_correct`` (1 when the model's top token is the answer's first token; only those facts are
knocked out, the others are recorded with 0 so accuracy is visible), ``subject_found`` (0 when the
subject is not in the prompt) and ``subject_at_pos0`` (GEVA records it: without a BOS token, a
subject at position 0 removes the attention sink).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> prompt = "The Eiffel Tower is located in the city of"
    >>> r = knockout_fact(lm, prompt, "Eiffel Tower", window=3)
    >>> sorted(r.rel_diff) == ["last", "non_subject", "subject"]
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from precompute.facts import (
    FactPrompt,
    answer_matches,
    fact_check_row,
    fact_parts,
    metrics_frame,
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
from precompute.types import BaseConfig, Item, RunContext, rel_depth

BLOCK_SETS = ("subject", "non_subject", "last")


@dataclass(frozen=True)
class KnockoutConfig(BaseConfig):
    """Defaults.

    ``window`` = 9 (GEVA notebook, GPT-2 XL; seed 000 uses 4, i.e. 5 inclusive layers).
    ``impl`` = score hook (ours; the mask path gives the same numbers, tested).
    ``use_cache`` = True: the clean prefix's keys/values are reused (ours; same numbers, tested).
    ``n_items`` = 185 (ours: the team's whole fact set; only correct facts are knocked out).
    ``max_tokens`` = 64 (ours: fact prompts are short; longer prompts are refused, not cut,
    because cutting would move the last position).
    ``chunk_elems`` bounds the logits held at once (ours; Gemma's vocabulary is 262k).
    ``stride`` = 1: knock out every ``stride``-th fact only (ours: a small CPU run still spans
    every relation of the fact file, which is ordered by relation).
    ``subject`` is used by ``run-one`` only (or mark it in brackets in the prompt).
    """

    window: int = 9
    impl: str = "score_hook"
    use_cache: bool = True
    n_items: int = 185
    stride: int = 1
    max_tokens: int = 64
    chunk_elems: int = 2**24
    subject: str = ""


# ------------------------------------------------------------------------------------------------
# The knockout itself


def block_keys(grp: str, start: int, end: int, query: int) -> list[int]:
    """Keys whose edge into ``query`` a key set blocks (``subject | non_subject | last``)."""
    if grp == "subject":
        return list(range(start, end))
    if grp == "non_subject":
        return [j for j in range(query) if not start <= j < end]
    if grp == "last":
        return [query]
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
    """

    fact: FactPrompt
    target_id: int
    target_str: str
    p_base: float
    p_new: dict[str, list[float]]
    rel_diff: dict[str, list[float]]
    window: int
    correct: bool | None = None

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
) -> KnockoutResult:
    """Knock out the three edge sets into the last position, window centred on every layer.

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

    Returns:
        The curves, ``3 x L`` knocked-out probabilities in ``1 + 3L`` sequence forwards.

    Raises:
        ValueError: Bad subject or prompt (see ``subject_tokens``), or a negative window.
    """
    if window < 0:
        raise ValueError(f"The window must be >= 0 layers, got {window}.")
    if fact is None:
        fact = subject_tokens(lm, prompt, subject, char_span, max_tokens)
    q, n_layers = fact.n_tokens - 1, lm.n_layers
    cuts = [Cut((), ())] + [  # row 0 is the clean run, in the same batch as the knockouts
        Cut(
            tuple(window_layers(c, window, n_layers)),
            tuple(block_keys(g, fact.start, fact.end, q)),
        )
        for g in BLOCK_SETS
        for c in range(n_layers)
    ]
    logp = knockout_logprobs(
        lm, fact.ids, cuts, impl=impl, chunk_elems=chunk_elems, use_cache=use_cache
    )  # (1 + 3L, V)
    target = int(logp[0].argmax())
    p_base = float(logp[0, target].exp())
    p_new = logp[1:, target].exp().view(len(BLOCK_SETS), n_layers)  # (3, L)
    rel = 100.0 * (p_new - p_base) / p_base
    return KnockoutResult(
        fact=fact,
        target_id=target,
        target_str=lm.tokenizer.decode([target]),
        p_base=p_base,
        p_new={g: p_new[i].tolist() for i, g in enumerate(BLOCK_SETS)},
        rel_diff={g: rel[i].tolist() for i, g in enumerate(BLOCK_SETS)},
        window=window,
        correct=answer_matches(lm, target, answer),
    )


# ------------------------------------------------------------------------------------------------
# Rows


def result_records(r: KnockoutResult, n_layers: int, prompt_id: str) -> list[dict]:
    """Per (key set, centre layer): relative_diff_pct, p_new, p_base; plus the summary rows."""
    recs = []
    variant = f"W{r.window}"
    for grp in BLOCK_SETS:
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
    return recs


def process(
    lm: LoadedModel, items: list[Item], cfg: KnockoutConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: knockout curves of every fact the model answers correctly.

    Facts whose subject cannot be located (or whose prompt is too long) get one summary row
    ``subject_found = 0``; facts the model gets wrong get ``answer_correct = 0``: both are counted,
    never silently lost.
    """
    recs, prompts, checks = [], [], []
    variant = f"W{cfg.window}"
    n_layers = lm.n_layers
    for item in items[:: max(1, cfg.stride)]:
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
        r = knockout_fact(
            lm,
            prompt,
            window=cfg.window,
            answer=answer,
            impl=cfg.impl,
            use_cache=cfg.use_cache,
            chunk_elems=cfg.chunk_elems,
            fact=fact,
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
    r = knockout_fact(
        lm,
        prompt,
        subject,
        window=cfg.window,
        impl=cfg.impl,
        use_cache=cfg.use_cache,
        max_tokens=cfg.max_tokens,
        chunk_elems=cfg.chunk_elems,
    )
    return result_frame(r, lm.n_layers, lm.name)


METHOD = Method(
    name="attention_knockout",
    summary="Attention knockout: block subject / non-subject / last edges into the last position.",
    config_cls=KnockoutConfig,
    dataset="facts",
    process=process,
    run_one=run_one,
    chunk_size=None,  # ``stride`` picks facts across the whole file
)
