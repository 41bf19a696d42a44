"""The one fact prompt: subject span, answer rule, bracket syntax, window rule, fact rows.

Every fact method (causal tracing, attention knockout, activation patching) and the app's fact
pages use these, so one picked subject marks the same tokens everywhere and one answer counts as
correct everywhere.

* :func:`fact_parts` reads a fact from the team's file (``template, subject, answer, relation``)
  or ROME's known facts (``prompt, subject, attribute, relation_id``): ``answer`` first, then
  ``attribute``.
* :func:`subject_tokens` tokenises a prompt and finds the subject's tokens through the tokenizer's
  character offsets, from the subject text (first occurrence) or from a picked character span;
  the span found is the one used afterwards (never searched again).
* :func:`answer_matches` is the correctness rule (ROME's, made tokenizer-neutral).
* :func:`split_marked` reads ``run-one`` prompts whose subject is in brackets.
* :func:`window_layers` is the window rule of causal tracing and knockout.
* :func:`facts_in_order` is the order in which fact methods try a file's facts (round-robin over
  relations).

Example:
    >>> split_marked("[The Eiffel Tower] is located in")
    ('The Eiffel Tower is located in', 'The Eiffel Tower')
    >>> list(window_layers(0, 9, 30))
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from precompute.types import Item, RunContext

if TYPE_CHECKING:  # torch only where a model is at hand
    import torch

    from precompute.model.load import LoadedModel


@dataclass(frozen=True)
class FactPrompt:
    """A fact prompt as one model tokenised it.

    Attributes:
        text: The prompt.
        subject: The subject as it appears in ``text``.
        ids: Token ids ``(1, T)``.
        start: First subject token.
        end: One past the last subject token (``[start, end)``).
        char_start: The subject's first character in ``text``.
    """

    text: str
    subject: str
    ids: torch.Tensor
    start: int
    end: int
    char_start: int = 0

    @property
    def n_tokens(self) -> int:
        """Number of tokens ``T``."""
        return int(self.ids.shape[1])


def fact_parts(item: Item) -> tuple[str, str, str, str]:
    """``(prompt, subject, answer, relation)`` of a fact from ``facts`` or ``known_1000``.

    The answer is ``answer`` when present and non-empty, else ``attribute``; ``""`` without one.
    """
    f = item.fields
    answer = str(f.get("answer") or f.get("attribute") or "")
    relation = str(f.get("relation") or f.get("relation_id") or "")
    return item.text, str(f.get("subject") or ""), answer, relation


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
        subject: Subject text, stripped (its first occurrence is used) ...
        char_span: ... or the subject's character span ``[start, end)`` in ``prompt`` (wins).
        max_tokens: Refuse longer prompts (cutting would move the last position).

    Returns:
        The tokenised prompt with the subject's token span.

    Raises:
        ValueError: Subject empty or not found, covering the whole prompt or its last token, the
            prompt too long, or the tokenizer's offsets not matching its ids.
    """
    if char_span is None:
        subject = (subject or "").strip()
        if not subject:
            raise ValueError("Mark the subject: it is empty.")
        pos = prompt.find(subject)
        if pos < 0:
            raise ValueError(f"The subject {subject!r} does not occur in the prompt {prompt!r}.")
        char_span = (pos, pos + len(subject))
    cs, ce = char_span
    if not (0 <= cs < ce <= len(prompt)):
        raise ValueError(f"The subject span {char_span} is not inside the prompt.")
    enc = lm.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    n = 1 + len(enc["input_ids"])  # the start token, then the prompt's (LoadedModel.tokenize)
    if max_tokens is not None and n > max_tokens:
        raise ValueError(
            f"The prompt has {n} tokens; the limit is {max_tokens}. Use a shorter fact prompt."
        )
    ids = lm.tokenize(prompt)  # (1, T)
    if [lm.start_id, *enc["input_ids"]] != ids[0].tolist():
        raise ValueError(
            "The prompt is longer than the model's context window, or the tokenizer's offsets "
            "do not match the model's tokens for this prompt."
        )
    spans = [(0, 0), *enc["offset_mapping"]]  # the start token covers no character
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
            f"The prompt ends with the subject {prompt[cs:ce]!r}: the answer is read at the last "
            "token, so a fact prompt must continue after the subject (e.g. 'The Eiffel Tower is "
            "located in the city of')."
        )
    return FactPrompt(prompt, prompt[cs:ce], ids, start, end, cs)


def answer_matches(lm: LoadedModel, token_id: int, gold: str | None) -> bool | None:
    """Whether the model's top token is the gold answer (ROME's test, tokenizer-neutral).

    Correct when ``token_id`` is the first token of ``" " + gold`` or decodes (stripped) to the
    gold string, ignoring case. ``None`` when there is no gold answer (correctness unknown).
    """
    gold = (gold or "").strip()
    if not gold:
        return None
    first = lm.tokenizer(" " + gold, add_special_tokens=False)["input_ids"][:1]
    decoded = lm.tokenizer.decode([token_id]).strip()
    return first == [token_id] or decoded.lower() == gold.lower()


def split_marked(prompt: str) -> tuple[str, str]:
    """Split a ``run-one`` prompt whose subject is in brackets: ``"[Eiffel Tower] is in"``.

    Returns:
        ``(prompt without the brackets, subject)``.

    Raises:
        ValueError: No bracket pair, or ``]`` before ``[``.
    """
    if "[" not in prompt or "]" not in prompt or prompt.index("]") < prompt.index("["):
        raise ValueError("Mark the subject in brackets, e.g. '[The Eiffel Tower] is located in'.")
    i, j = prompt.index("["), prompt.index("]")
    return prompt[:i] + prompt[i + 1 : j] + prompt[j + 1 :], prompt[i + 1 : j]


def window_layers(center: int, window: int, n_layers: int) -> range:
    """Layers of the window around ``center``: ``[max(0, c - W//2), min(L, c + ceil(W/2)))``.

    ROME's and Geva's rule (``W`` layers, fewer at the ends; ``W <= 0``: none).
    """
    if window <= 0:
        return range(0)
    return range(max(0, center - window // 2), min(n_layers, center - (-window // 2)))


#: ROME's token groups of a fact prompt, in reading order.
TOKEN_GROUPS = (
    "before",
    "first_subject",
    "middle_subject",
    "last_subject",
    "first_subsequent",
    "further",
    "last",
)


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


#: The share of the blocks an ``auto`` window covers: the papers' 9-10 of 48 blocks.
WINDOW_FRACTION = 0.2


def scaled_window(n_layers: int, fraction: float = WINDOW_FRACTION) -> int:
    """A window about ``fraction`` of the depth (the papers' 9-10 of 48 blocks), at least 1."""
    return max(1, round(fraction * n_layers))


def parse_windows(spec: str | int, n_layers: int) -> list[tuple[str, int]]:
    """Read a window setting: ``"auto,1"`` -> ``[("Wauto", round(L/5)), ("W1", 1)]``.

    ``auto`` scales the window to the depth (:func:`scaled_window`); a number is that many
    layers. The first entry is the main window. Each comes with its ``variant`` name.

    Raises:
        ValueError: An entry that is neither ``auto`` nor a positive whole number.
    """
    out: list[tuple[str, int]] = []
    for part in str(spec).split(","):
        part = part.strip().lower()
        if part == "auto":
            out.append(("Wauto", scaled_window(n_layers)))
        elif part.isdigit() and int(part) >= 1:
            out.append((f"W{int(part)}", int(part)))
        else:
            raise ValueError(
                f"Window {part!r} is not valid: use 'auto' (about a fifth of the blocks) or a "
                "number of layers >= 1, comma-separated (e.g. 'auto,1')."
            )
    if not out:
        raise ValueError("Give at least one window, e.g. 'auto'.")
    return out


# ------------------------------------------------------------------------------------------------
# Aligned pairs (activation patching)


def swap_subject(
    lm: LoadedModel, clean: FactPrompt, other: str, max_tokens: int | None = None
) -> FactPrompt:
    """Replace the clean prompt's subject by ``other``, checking the tokens line up.

    Raises:
        ValueError: The swapped prompt differs from the clean one outside the subject span, or
            has another length (B3 needs aligned pairs).
    """
    import torch

    cs = clean.char_start  # the picked span, never searched again
    text = clean.text[:cs] + other + clean.text[cs + len(clean.subject) :]
    corr = subject_tokens(lm, text, char_span=(cs, cs + len(other)), max_tokens=max_tokens)
    a, b = clean.ids[0], corr.ids[0]
    if a.shape != b.shape or (corr.start, corr.end) != (clean.start, clean.end):
        raise ValueError(
            f"{other!r} does not have as many tokens as {clean.subject!r} in this prompt."
        )
    outside = torch.ones_like(a, dtype=torch.bool)
    outside[clean.start : clean.end] = False
    if not torch.equal(a[outside], b[outside]):
        raise ValueError(f"Swapping in {other!r} changes tokens outside the subject.")
    return corr


def swap_candidates(items: Sequence[Item], index: int, limit: int) -> list[str]:
    """Subjects of other facts of the same relation, in dataset order starting after ``index``."""
    _, subject, _, relation = fact_parts(items[index])
    out: list[str] = []
    n = len(items)
    for k in range(1, n):
        _, other, _, rel = fact_parts(items[(index + k) % n])
        if rel == relation and other and other != subject and other not in out:
            out.append(other)
        if len(out) >= limit:
            break
    return out


#: Orders in which fact methods try a file's facts (``order`` in their configs).
FACT_ORDERS = ("relations", "dataset")


def facts_in_order(items: Sequence[Item], order: str = "relations", stride: int = 1) -> list[int]:
    """Indices of the facts to try, in the order to try them.

    ``stride`` keeps every ``stride``-th fact of the file (indices ``0, stride, ...``). ``order =
    "relations"`` (ours) then takes them round-robin over relations: the first fact of every
    relation (relations in order of first appearance), then the second of each, and so on, so a
    run that stops after ``n`` facts spans every relation even when the file is sorted by
    relation; within a relation the file's order is kept. ``"dataset"``: the file's order.
    """
    if order not in FACT_ORDERS:
        raise ValueError(f"Unknown fact order {order!r}; use one of {FACT_ORDERS}.")
    kept = range(0, len(items), max(1, stride))
    if order == "dataset":
        return list(kept)
    groups: dict[str, list[int]] = {}
    for i in kept:
        groups.setdefault(fact_parts(items[i])[3], []).append(i)
    depth = max((len(g) for g in groups.values()), default=0)
    return [g[r] for r in range(depth) for g in groups.values() if r < len(g)]


# ------------------------------------------------------------------------------------------------
# Rows


def prompt_row(lm: LoadedModel, ctx: RunContext, prompt_id: str, text: str, ids) -> dict:
    """Build a ``prompts`` row: the prompt as this model tokenised it."""
    toks = lm.token_strs(ids)
    return dict(
        model=ctx.model,
        dataset=ctx.dataset,
        prompt_id=prompt_id,
        text=text,
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
        correct=bool(answer_matches(lm, target, answer)),
        subject_start=fact.start,
        subject_end=fact.end,
        run_id=ctx.run_id,
    )


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


def metrics_frame(ctx: RunContext, recs: list[dict]):
    """``ctx.metrics`` with every optional column filled on every record (no NaN columns)."""
    for rec in recs:
        rec.setdefault("variant", "")
        rec.setdefault("position", -1)
        rec.setdefault("grp", "")
    return ctx.metrics(recs)
