"""Activation patching (METHODS.md B3): from which layer does the model *use* the answer.

Our documented protocol (seed 000 gives none; Zhang & Nanda 2023 best practice). A clean fact prompt
is paired with a corrupted one in which the subject is replaced by **another subject of the same
relation** whose prompt has the same tokens everywhere except the subject span (same token length,
same span; B3 "symmetric token replacement"). Clean run: answer ``o`` (argmax), ``p_clean``;
corrupted run: its own answer ``o' != o``. The metric is the logit difference
``LD = logit(o) - logit(o')`` (the probability of ``o`` is reported too). Clean activations are
copied into the corrupted run one at a time:

* ``resid_last`` (cumulative): residual state ``h_i`` (``i = 0..L``, ``layer_kind = "resid"``,
  ``rel_depth = i/L``) at the last position;
* ``block_out_last`` (per-layer importance): block ``l``'s output delta ``h_{l+1} - h_l`` (attention
  plus MLP) at the last position (``layer_kind = "block"``, ``rel_depth = l/(L-1)``);
* ``resid_subject_last``: ``h_i`` at the last subject token (ROME's "early site").

Normalised effect ``(m_patched - m_corr) / (m_clean - m_corr)``: 0 = no help, 1 = fully restored.
Pairs with ``|m_clean - m_corr| < 1e-3`` are dropped (B3).

Metric names (``metrics`` table, ``method = "activation_patching"``, ``variant`` = the variant):

* per fact and layer: ``effect_logit_diff`` (fraction), ``effect_prob`` (fraction), ``p_patched``
  (prob), ``logit_diff_patched`` (logit);
* per fact, ``layer_kind = "summary"`` rows (``layer = -1``, ``rel_depth = -1``: not a depth):
  ``uses_layer`` (count: a layer index) and ``uses_rel_depth`` (fraction) -- for ``resid_last`` the
  first state ``i`` with ``effect_logit_diff >= 0.5`` (B3 step 6), for ``block_out_last`` the argmax
  block, for ``resid_subject_last`` the first state with effect ``>= 0.5`` --; ``p_clean``,
  ``p_corr`` (prob), ``logit_diff_clean``, ``logit_diff_corr`` (logit); and, with ``variant = ""``,
  ``answer_correct`` and ``pair_found`` (fraction) for every fact seen.

The "knows versus uses" page reads ``USES_VARIANT``/``USES_REL_METRIC`` from here: the mean
over facts of ``uses_rel_depth`` for ``resid_last``, on the ``i/L`` axis of probes on ``h_0..h_L``.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> prompt = "The capital is located in the city of"  # " capital", " layer": one token each
    >>> r = patch_pair(lm, prompt, "capital", "layer", check=False)
    >>> len(r.effect_ld["resid_last"]) == lm.n_layers + 1
    True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from precompute.facts import (
    FACT_ORDERS,
    FactPrompt,
    answer_matches,
    fact_check_row,
    fact_parts,
    facts_in_order,
    metrics_frame,
    prompt_row,
    subject_tokens,
    summary_record,
    swap_candidates,
    swap_subject,
)
from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.model.patching import Patch, patched_logits
from precompute.model.replay import top_token
from precompute.types import BaseConfig, Item, RunContext, option, rel_depth

VARIANTS = ("resid_last", "block_out_last", "resid_subject_last")
#: The variant, metric and threshold that define the "uses" layer (for the knows-vs-uses page).
USES_VARIANT = "resid_last"
USES_METRIC = "uses_layer"
USES_REL_METRIC = "uses_rel_depth"
EFFECT_METRIC = "effect_logit_diff"
USES_THRESHOLD = 0.5
MIN_DENOMINATOR = 1e-3


@dataclass(frozen=True)
class PatchingConfig(BaseConfig):
    """Defaults (all ours, METHODS.md B3 "Defaults (ours)").

    ``n_pairs`` = 60 pairs per run (issue 10; was ``max_facts``; B3 suggests 200). The whole
    dataset is loaded (``n_items`` = 185: the team's whole file) because the swap subjects come
    from it.
    ``candidates`` = 8 same-relation subjects tried per fact; ``batch_rows`` = 128 rows per pass.
    ``order`` = "relations" (ours): facts tried round-robin over relations
    (:func:`precompute.facts.facts_in_order`), so ``n_pairs`` pairs span a file sorted by relation;
    "dataset": the file's order. ``stride`` = 1: try every ``stride``-th fact only (swap partners
    still come from every fact).
    ``subject`` / ``corrupt_subject`` are for ``run-one`` only.
    """

    RENAMED: ClassVar[dict[str, str]] = {"max_facts": "n_pairs"}

    n_pairs: int = 60
    order: str = option("relations", choices=FACT_ORDERS)
    stride: int = 1
    n_items: int = 185
    candidates: int = 8
    max_tokens: int = 64
    batch_rows: int = 128
    subject: str = ""
    corrupt_subject: str = ""


def variant_patches(variant: str, n_layers: int, last: int, subject_last: int) -> list[Patch]:
    """List the patches of one variant, in layer order."""
    if variant == "resid_last":
        return [Patch("resid", i, last) for i in range(n_layers + 1)]
    if variant == "block_out_last":
        return [Patch("block_out", i, last) for i in range(n_layers)]
    if variant == "resid_subject_last":
        return [Patch("resid", i, subject_last) for i in range(n_layers + 1)]
    raise ValueError(f"Unknown variant {variant!r}; use one of {VARIANTS}.")


@dataclass
class PatchResult:
    """Patching curves of one (clean, corrupted) pair.

    Attributes:
        clean, corrupt: The two prompts (same tokens outside the subject span).
        target_id, foil_id: ``o`` (clean answer) and ``o'`` (corrupted answer).
        p_clean, p_corr: Probability of ``o`` in each run.
        ld_clean, ld_corr: ``logit(o) - logit(o')`` in each run.
        p_patched, ld_patched, effect_prob, effect_ld: Per variant, one value per layer.
        correct: Whether ``o`` is the given answer (``None``: no answer given).
    """

    clean: FactPrompt
    corrupt: FactPrompt
    target_id: int
    foil_id: int
    p_clean: float
    p_corr: float
    ld_clean: float
    ld_corr: float
    p_patched: dict[str, list[float]]
    ld_patched: dict[str, list[float]]
    effect_prob: dict[str, list[float]]
    effect_ld: dict[str, list[float]]
    correct: bool | None = None

    def uses_layer(self, variant: str = USES_VARIANT) -> int:
        """First layer with effect >= 0.5 (``block_out_last``: the layer of the largest effect)."""
        eff = self.effect_ld[variant]
        if variant == "block_out_last":
            return max(range(len(eff)), key=eff.__getitem__)
        return next((i for i, e in enumerate(eff) if e >= USES_THRESHOLD), len(eff) - 1)


def _effect(patched: torch.Tensor, m_clean: float, m_corr: float) -> list[float]:
    return ((patched - m_corr) / (m_clean - m_corr)).tolist()


def patch_pair(
    lm: LoadedModel,
    prompt: str,
    subject: str,
    corrupt_subject: str,
    answer: str | None = None,
    variants: Sequence[str] = VARIANTS,
    max_tokens: int | None = 64,
    batch_rows: int = 128,
    check: bool = True,
) -> PatchResult:
    """Patch every layer of each variant from the clean prompt into the swapped-subject prompt.

    Args:
        lm: Loaded model.
        prompt: Clean fact prompt.
        subject: Its subject.
        corrupt_subject: A subject of the same relation with the same token length.
        answer: Optional gold answer (sets ``correct``).
        variants: Which of ``VARIANTS`` to run.
        max_tokens: Longest prompt accepted.
        batch_rows: Rows per forward pass.
        check: Refuse pairs whose two runs give the same answer, or whose metric does not move
            (``|LD_clean - LD_corr| < 1e-3``): the normalised effect is then undefined.

    Returns:
        The curves: ``2 + sum(layers per variant)`` rows, about ``3L + 4`` sequence forwards.

    Raises:
        ValueError: Bad subject, unaligned pair, or (with ``check``) a pair with nothing to restore.
    """
    clean = subject_tokens(lm, prompt, subject, max_tokens=max_tokens)
    corr = swap_subject(lm, clean, corrupt_subject, max_tokens)
    if check:  # two cheap passes first: is there anything to restore?
        base = patched_logits(lm, clean.ids, corr.ids, [])
        o = int(base[0].argmax())
        if o == int(base[1].argmax()):
            raise ValueError(
                f"Both prompts make the model predict {lm.tokenizer.decode([o])!r}: swapping "
                f"{subject!r} for {corrupt_subject!r} does not change the answer."
            )
    last, n_layers = clean.n_tokens - 1, lm.n_layers
    plan = {v: variant_patches(v, n_layers, last, clean.end - 1) for v in variants}
    patches = [p for v in variants for p in plan[v]]
    logits = patched_logits(lm, clean.ids, corr.ids, patches, batch_rows)  # (2 + P, V)
    o, o2 = int(logits[0].argmax()), int(logits[1].argmax())
    if o == o2 and check:
        raise ValueError(f"Both prompts make the model predict {lm.tokenizer.decode([o])!r}.")
    if o == o2:  # unchecked: compare with the corrupted run's runner-up
        o2 = int(logits[1].topk(2).indices[1])
    probs = torch.softmax(logits, -1)[:, o]  # (2 + P,)
    ld = logits[:, o] - logits[:, o2]  # (2 + P,)
    ld_clean, ld_corr = float(ld[0]), float(ld[1])
    if check and abs(ld_clean - ld_corr) < MIN_DENOMINATOR:
        raise ValueError("The logit difference hardly differs between the runs (< 1e-3).")
    res = PatchResult(
        clean=clean,
        corrupt=corr,
        target_id=o,
        foil_id=o2,
        p_clean=float(probs[0]),
        p_corr=float(probs[1]),
        ld_clean=ld_clean,
        ld_corr=ld_corr,
        p_patched={},
        ld_patched={},
        effect_prob={},
        effect_ld={},
        correct=answer_matches(lm, o, answer),
    )
    i = 2
    for v in variants:
        k = len(plan[v])
        p_v, ld_v = probs[i : i + k], ld[i : i + k]
        res.p_patched[v] = p_v.tolist()
        res.ld_patched[v] = ld_v.tolist()
        res.effect_ld[v] = _effect(ld_v, ld_clean, ld_corr)
        denom = res.p_clean - res.p_corr
        res.effect_prob[v] = (
            _effect(p_v, res.p_clean, res.p_corr) if abs(denom) >= 1e-9 else [0.0] * k
        )
        i += k
    return res


# ------------------------------------------------------------------------------------------------
# Rows


def result_records(r: PatchResult, n_layers: int, prompt_id: str) -> list[dict]:
    """Per (variant, layer) effects and per-variant summary rows (names in the module docstring)."""
    recs = []
    for v in r.effect_ld:
        kind = "block" if v == "block_out_last" else "resid"
        for layer in range(len(r.effect_ld[v])):
            depth = rel_depth(layer, kind, n_layers)
            for metric, value, unit in (
                (EFFECT_METRIC, r.effect_ld[v][layer], "fraction"),
                ("effect_prob", r.effect_prob[v][layer], "fraction"),
                ("p_patched", r.p_patched[v][layer], "prob"),
                ("logit_diff_patched", r.ld_patched[v][layer], "logit"),
            ):
                recs.append(
                    dict(
                        prompt_id=prompt_id,
                        variant=v,
                        position=-1,  # the variant names the position; metrics_agg reads -1
                        layer=layer,
                        layer_kind=kind,
                        n_layers=n_layers,
                        rel_depth=depth,
                        metric=metric,
                        value=float(value),
                        unit=unit,
                    )
                )
        uses = r.uses_layer(v)
        for metric, value, unit in (
            (USES_METRIC, uses, "count"),
            (USES_REL_METRIC, rel_depth(uses, kind, n_layers), "fraction"),
            ("p_clean", r.p_clean, "prob"),
            ("p_corr", r.p_corr, "prob"),
            ("logit_diff_clean", r.ld_clean, "logit"),
            ("logit_diff_corr", r.ld_corr, "logit"),
        ):
            recs.append(summary_record(prompt_id, n_layers, metric, value, unit, v))
    return recs


def find_pair(
    lm: LoadedModel, items: Sequence[Item], index: int, cfg: PatchingConfig
) -> tuple[PatchResult | None, str]:
    """Patch the fact at ``index`` against the first usable swap partner.

    Returns:
        ``(result, reason)``: the result, or ``None`` and why no pair was usable.
    """
    prompt, subject, answer, _ = fact_parts(items[index])
    reason = "no other subject of the same relation"
    for other in swap_candidates(items, index, cfg.candidates):
        try:
            res = patch_pair(
                lm,
                prompt,
                subject,
                other,
                answer=answer,
                max_tokens=cfg.max_tokens,
                batch_rows=cfg.batch_rows,
            )
        except ValueError as err:
            reason = str(err)
            continue
        return res, ""
    return None, reason


def process(
    lm: LoadedModel, items: list[Item], cfg: PatchingConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: the first ``n_pairs`` correctly answered facts with an aligned partner.

    Facts are tried in ``cfg.order``. Every fact seen gets ``answer_correct`` (and, when correct,
    ``pair_found``) rows.
    """
    recs, prompts, checks, done = [], [], [], 0
    n_layers = lm.n_layers
    for index in facts_in_order(items, cfg.order, cfg.stride):
        if done >= cfg.n_pairs:
            break
        item, pid = items[index], items[index].prompt_id
        prompt, subject, answer, _ = fact_parts(item)
        try:
            fact = subject_tokens(lm, prompt, subject, max_tokens=cfg.max_tokens)
        except ValueError:
            recs.append(summary_record(pid, n_layers, "subject_found", 0, "fraction"))
            continue
        target, p_target = top_token(lm, fact.ids)
        correct = bool(answer_matches(lm, target, answer))
        checks.append(fact_check_row(lm, ctx, item, fact, target, p_target))
        recs.append(summary_record(pid, n_layers, "answer_correct", correct, "fraction"))
        if not correct:
            continue
        res, _ = find_pair(lm, items, index, cfg)
        recs.append(summary_record(pid, n_layers, "pair_found", res is not None, "fraction"))
        if res is None:
            continue
        recs += result_records(res, n_layers, pid)
        prompts.append(prompt_row(lm, ctx, pid, fact.text, fact.ids))
        done += 1
    out = {"metrics": metrics_frame(ctx, recs)}
    if prompts:
        out["prompts"] = pd.DataFrame(prompts)
    if checks:
        out["fact_checks"] = pd.DataFrame(checks)
    return out


def run_one(lm: LoadedModel, prompt: str, cfg: PatchingConfig) -> pd.DataFrame:
    """Patching curves for one prompt (``--set subject=... --set corrupt_subject=...``)."""
    if not cfg.subject or not cfg.corrupt_subject:
        raise ValueError(
            "Name both subjects: --set subject='France' --set corrupt_subject='Italy'."
        )
    r = patch_pair(
        lm,
        prompt,
        cfg.subject,
        cfg.corrupt_subject,
        max_tokens=cfg.max_tokens,
        batch_rows=cfg.batch_rows,
    )
    ctx = RunContext(model=lm.name, method="activation_patching", dataset="live")
    df = metrics_frame(ctx, result_records(r, lm.n_layers, "live"))
    df["answer"] = lm.tokenizer.decode([r.target_id])
    df["corrupt_answer"] = lm.tokenizer.decode([r.foil_id])
    return df


def pair_summary(lm: LoadedModel, r: PatchResult) -> str:
    """One line describing a pair, for logs and the app."""
    return json.dumps(
        {
            "clean": r.clean.text,
            "corrupt": r.corrupt.text,
            "answer": lm.tokenizer.decode([r.target_id]),
            "corrupt_answer": lm.tokenizer.decode([r.foil_id]),
        }
    )


METHOD = Method(
    name="activation_patching",
    summary="Activation patching: clean states into a swapped-subject run; where it is used.",
    config_cls=PatchingConfig,
    dataset="facts",
    process=process,
    run_one=run_one,
    chunk_size=None,  # swap partners come from the whole dataset
)
