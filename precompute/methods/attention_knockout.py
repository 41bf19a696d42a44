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

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from precompute.bench.util import matmul_peak_flops
from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext, rel_depth

BLOCK_SETS = ("subject", "non_subject", "last")
IMPLS = ("score_hook", "mask")


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
# Facts: prompt, subject span, answer


@dataclass(frozen=True)
class FactPrompt:
    """A fact prompt as one model tokenised it.

    Attributes:
        text: The prompt.
        subject: The subject as it appears in ``text``.
        ids: Token ids ``(1, T)``.
        start: First subject token.
        end: One past the last subject token (``[start, end)``).
    """

    text: str
    subject: str
    ids: torch.Tensor
    start: int
    end: int

    @property
    def n_tokens(self) -> int:
        """Number of tokens ``T``."""
        return int(self.ids.shape[1])


def fact_parts(item: Item) -> tuple[str, str, str, str]:
    """``(prompt, subject, answer, relation)`` of a fact from ``facts`` or ``known_1000``.

    The team's facts have ``template, subject, answer, relation``; ROME's known facts have
    ``prompt, subject, attribute, relation_id``.
    """
    f = item.fields
    answer = str(f.get("answer", f.get("attribute", "")))
    relation = str(f.get("relation", f.get("relation_id", "")))
    return item.text, str(f.get("subject", "")), answer, relation


def subject_tokens(
    lm: LoadedModel,
    prompt: str,
    subject: str | None = None,
    char_span: tuple[int, int] | None = None,
    max_tokens: int | None = None,
) -> FactPrompt:
    """Tokenise a fact prompt and find the subject's tokens through the offset mapping.

    Args:
        lm: Loaded model (its tokenizer).
        prompt: The prompt; it must continue after the subject.
        subject: Subject text (its first occurrence is used) ...
        char_span: ... or the subject's character span ``[start, end)`` in ``prompt``.
        max_tokens: Refuse longer prompts (cutting would move the last position).

    Returns:
        The tokenised prompt with the subject's token span.

    Raises:
        ValueError: Subject not found, empty, covering the last token, or the prompt too long.
    """
    if char_span is None:
        if not subject or not subject.strip():
            raise ValueError("Name the subject: it is empty.")
        pos = prompt.find(subject)
        if pos < 0:
            raise ValueError(f"The subject {subject!r} does not occur in the prompt {prompt!r}.")
        char_span = (pos, pos + len(subject))
    cs, ce = char_span
    if not (0 <= cs < ce <= len(prompt)):
        raise ValueError(f"The subject span {char_span} is not inside the prompt.")
    enc = lm.tokenizer(prompt, return_offsets_mapping=True)
    n = len(enc.input_ids)
    if max_tokens is not None and n > max_tokens:
        raise ValueError(
            f"The prompt has {n} tokens; the limit is {max_tokens}. Use a shorter fact prompt."
        )
    ids = lm.tokenize(prompt)  # (1, T)
    if enc.input_ids != ids[0].tolist():
        raise ValueError(
            "The prompt is longer than the model's context window, or the tokenizer's offsets "
            "do not match the model's tokens for this prompt."
        )
    spans = enc.offset_mapping
    inside = [i for i, (s, e) in enumerate(spans) if e > s and s < ce and e > cs]
    if not inside:
        raise ValueError(f"No token of the prompt covers the subject {prompt[cs:ce]!r}.")
    start, end = inside[0], inside[-1] + 1
    content = [i for i, (s, e) in enumerate(spans) if e > s]
    if start <= content[0] and end > content[-1]:
        raise ValueError(
            "The subject covers the whole prompt: write a prompt that continues after the subject "
            "(e.g. 'The Eiffel Tower is located in the city of')."
        )
    if end >= n:
        raise ValueError(
            f"The subject {prompt[cs:ce]!r} reaches the last token: a fact prompt must continue "
            "after the subject (e.g. 'The Eiffel Tower is located in the city of')."
        )
    return FactPrompt(prompt, prompt[cs:ce], ids, start, end)


def answer_matches(lm: LoadedModel, token_id: int, answer: str) -> bool:
    """Whether the model's top token is the answer: the first token of ``" " + answer``.

    Also accepted: the decoded token equals the answer after stripping spaces, ignoring case
    (ROME's test; the same rule as ``causal_tracing``).
    """
    answer = answer.strip()
    if not answer:
        return False
    first = lm.tokenizer(" " + answer, add_special_tokens=False).input_ids[:1]
    decoded = lm.tokenizer.decode([token_id]).strip()
    return first == [token_id] or decoded.lower() == answer.lower()


# ------------------------------------------------------------------------------------------------
# The knockout itself


def window_layers(center: int, window: int, n_layers: int) -> list[int]:
    """Layers of the window around ``center``: ``[max(0, c - W//2), min(L, c + ceil(W/2)))``."""
    if window <= 0:
        return []
    return list(range(max(0, center - window // 2), min(n_layers, center + math.ceil(window / 2))))


def block_keys(grp: str, start: int, end: int, query: int) -> list[int]:
    """Keys whose edge into ``query`` a key set blocks (``subject | non_subject | last``)."""
    if grp == "subject":
        return list(range(start, end))
    if grp == "non_subject":
        return [j for j in range(query) if not start <= j < end]
    if grp == "last":
        return [query]
    raise ValueError(f"Unknown key set {grp!r}; use one of {BLOCK_SETS}.")


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
        cached = use_cache and keep == 1 and n_tokens > 1
        batch = ids.expand(len(chunk), -1)  # (B, T)
        kwargs: dict = {"logits_to_keep": keep}
        with lm.lock:
            if cached:  # the clean prefix once, its keys and values repeated for every row
                _, past = lm.bridge(ids[:, :-1], return_type="logits_and_cache", logits_to_keep=1)
                past.batch_repeat_interleave(len(chunk))
                batch, kwargs = batch[:, -1:], {"past_key_values": past, "logits_to_keep": 1}
            if impl == "score_hook":
                hooks = [
                    (f"blocks.{layer}.attn.hook_attn_scores", _score_hook(rows, query, n_tokens))
                    for layer, rows in per_layer.items()
                ]
                logits = lm.bridge.run_with_hooks(batch, fwd_hooks=hooks, **kwargs)
            else:
                handles = [
                    lm.bridge.blocks[layer].attn.register_forward_pre_hook(
                        _mask_hook(rows, query, n_tokens), with_kwargs=True
                    )
                    for layer, rows in per_layer.items()
                ]
                try:
                    logits = lm.bridge(batch, **kwargs)
                finally:
                    for h in handles:
                        h.remove()
        out.append(torch.log_softmax(logits[:n_real, 0].float(), -1))  # (B, V)
    return torch.cat(out)


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


def clean_prediction(
    lm: LoadedModel, fact: FactPrompt, impl: str = "score_hook"
) -> tuple[int, float]:
    """Return the clean top token at the last position and its probability."""
    logp = knockout_logprobs(lm, fact.ids, [Cut((), ())], impl=impl)[0]  # (V,)
    target = int(logp.argmax())
    return target, float(logp[target].exp())


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
        correct=None if answer is None else answer_matches(lm, target, answer),
    )


# ------------------------------------------------------------------------------------------------
# Rows


def summary_record(
    prompt_id: str, n_layers: int, metric: str, value: float, unit: str, variant: str = ""
) -> dict:
    """Build a per-fact scalar row (``layer = -1``, ``layer_kind = "summary"``, no depth)."""
    return dict(
        prompt_id=prompt_id,
        variant=variant,
        position=-1,
        grp="",
        layer=-1,
        layer_kind="summary",
        n_layers=n_layers,
        rel_depth=-1.0,
        metric=metric,
        value=float(value),
        unit=unit,
    )


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


def metrics_frame(ctx: RunContext, recs: list[dict]) -> pd.DataFrame:
    """``ctx.metrics`` with every optional column filled on every record (no NaN columns)."""
    for rec in recs:
        rec.setdefault("variant", "")
        rec.setdefault("position", -1)
        rec.setdefault("grp", "")
    return ctx.metrics(recs)


def prompt_row(lm: LoadedModel, ctx: RunContext, prompt_id: str, fact: FactPrompt) -> dict:
    """Build a ``prompts`` row: the prompt as this model tokenised it."""
    toks = lm.token_strs(fact.ids)
    return dict(
        model=ctx.model,
        dataset=ctx.dataset,
        prompt_id=prompt_id,
        text=fact.text,
        n_tokens=len(toks),
        tokens_json=json.dumps(toks),
        run_id=ctx.run_id,
    )


def fact_check_row(
    lm: LoadedModel, ctx: RunContext, item: Item, fact: FactPrompt, target: int, p: float
) -> dict:
    """Build a ``fact_checks`` row: the clean prediction and whether it is the fact's answer."""
    _, subject, answer, _ = fact_parts(item)
    return dict(
        model=ctx.model,
        method=ctx.method,
        dataset=ctx.dataset,
        prompt_id=item.prompt_id,
        subject=subject,
        gold=answer,
        prediction=lm.tokenizer.decode([target]),
        prediction_id=target,
        p_prediction=p,
        correct=answer_matches(lm, target, answer),
        subject_start=fact.start,
        subject_end=fact.end,
        run_id=ctx.run_id,
    )


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
        target, p_target = clean_prediction(lm, fact, cfg.impl)
        correct = answer_matches(lm, target, answer)
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
        prompts.append(prompt_row(lm, ctx, pid, fact))
    out = {"metrics": metrics_frame(ctx, recs)}
    if prompts:
        out["prompts"] = pd.DataFrame(prompts)
    if checks:
        out["fact_checks"] = pd.DataFrame(checks)
    return out


def split_marked(prompt: str) -> tuple[str, str]:
    """Split a ``run-one`` prompt whose subject is in brackets: ``"[Eiffel Tower] is in"``.

    The same convention as ``causal_tracing``'s ``run-one``.
    """
    if "[" not in prompt or "]" not in prompt or prompt.index("]") < prompt.index("["):
        raise ValueError("Mark the subject in brackets, e.g. '[The Eiffel Tower] is located in'.")
    i, j = prompt.index("["), prompt.index("]")
    return prompt[:i] + prompt[i + 1 : j] + prompt[j + 1 :], prompt[i + 1 : j]


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


# ------------------------------------------------------------------------------------------------
# Benchmark

BENCH_FACTS = (
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("The capital of France is the city of", "France"),
)


def bench(model_name: str, args) -> dict:
    """Time the knockout of a few facts three ways; report the largest probability differences.

    ``score_hook`` and ``mask`` use the key/value cache of the clean prefix (the default);
    ``uncached`` recomputes every position of every row (``use_cache=False``, score hook).
    """
    from precompute.model.load import load_model

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    ways = {
        "score_hook": dict(impl="score_hook"),
        "mask": dict(impl="mask"),
        "uncached": dict(impl="score_hook", use_cache=False),
    }
    timings: dict[str, float] = {}
    p_new: dict[str, list[float]] = {}
    for name, kw in ways.items():
        t0 = time.perf_counter()
        p_new[name] = []
        for prompt, subject in BENCH_FACTS:
            fact = subject_tokens(lm, prompt, subject)
            q = fact.n_tokens - 1
            cuts = [
                Cut(
                    tuple(window_layers(c, 9, lm.n_layers)),
                    tuple(block_keys(g, fact.start, fact.end, q)),
                )
                for g in BLOCK_SETS
                for c in range(lm.n_layers)
            ]
            p_new[name] += knockout_logprobs(lm, fact.ids, cuts, **kw).exp().flatten().tolist()
        timings[name] = time.perf_counter() - t0
    n = len(BENCH_FACTS)

    def diff(a: str, b: str) -> float:
        return max(abs(x - y) for x, y in zip(p_new[a], p_new[b]))

    return {
        "model": model_name,
        "n_facts": n,
        "n_layers": lm.n_layers,
        "knockouts_per_fact": 3 * lm.n_layers,
        "score_hook_seconds_per_fact": timings["score_hook"] / n,
        "mask_seconds_per_fact": timings["mask"] / n,
        "uncached_seconds_per_fact": timings["uncached"] / n,
        "cache_speedup": timings["uncached"] / timings["score_hook"],
        "max_abs_diff_mask_vs_hook": diff("mask", "score_hook"),
        "max_abs_diff_cached_vs_uncached": diff("uncached", "score_hook"),
        "matmul_gflops_fp32": matmul_peak_flops() / 1e9,
    }


METHOD = Method(
    name="attention_knockout",
    summary="Attention knockout: block subject / non-subject / last edges into the last position.",
    config_cls=KnockoutConfig,
    dataset="facts",
    process=process,
    run_one=run_one,
    chunk_size=None,  # ``stride`` picks facts across the whole file
    benches={"attention-knockout": bench},
)
