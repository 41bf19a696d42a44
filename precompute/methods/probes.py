"""Linear probes (METHODS.md E2): at which layer is the model's answer linearly decodable.

For every residual state ``h_i`` (``i = 0..L``) at the last position of each fact prompt, a
scikit-learn multinomial logistic regression (L2, ``C = 1``, lbfgs, standardised inside each fold
by a ``Pipeline``, Alain & Bengio's linear classifier probe) predicts the label, scored by 5-fold
stratified cross-validation with a fixed seed. The label (``label_kind``, stored in ``variant``) is
``model_answer``: the model's own final argmax token at the last position (METHODS.md E2 option a).

Controls, so that a high accuracy means something:

* ``majority_acc``: always predicting the most frequent class of the training fold;
* ``template_acc`` (when items carry a relation): the most frequent training answer of the
  item's relation -- what the template alone gives away (METHODS.md E2 pitfall);
* ``control_acc``: the same probe on labels shuffled once with a fixed seed (a control task in the
  spirit of Hewitt & Liang 2019), and ``selectivity = probe_acc - control_acc``.

The "knows" layer (METHODS.md B3 step 7) is the first state whose mean accuracy is at least
``0.9 x`` the best one (``knows_layer``), and the first at least ``0.8`` (``knows_layer_abs``).

Two controls against reading the template (issue 10; METHODS.md E2 pitfall), both options so the
embedded runs rebuild unchanged:

* ``label_scope = "within_relation"``: a separate probe inside each relation (classes with
  ``min_per_class`` examples within it; relations with fewer than two such classes are skipped).
  The template is constant within a relation, so it gives away only the relation's majority
  answer, which is ``majority_acc`` there. Fold rows carry ``prompt_id = <relation>|fold-k``, so
  the mean over ``prompt_id`` weighs every relation equally; ``n_relations`` counts those used.
* ``random_control = True``: the same probes on the residual states of a randomly initialised
  model of the same architecture (seeded), labels unchanged: ``random_init_acc``. What a random
  network's features already decode is not knowledge.

Rows (``metrics``): per fold (``prompt_id = fold-k``) and state, ``probe_acc``, ``probe_f1``
(macro), ``control_acc``, ``selectivity``, ``majority_acc`` (fractions); per state ``n_classes`` and
``n_examples`` (counts, summed over relations); one ``knows_layer`` and one ``knows_layer_abs`` row
(``grp = summary``, ``layer`` = that state, ``value`` = its index). ``metrics_agg`` then gives the
mean over folds. The statistics are pure functions in :mod:`precompute.stats.probing`.

Example:
    >>> ProbesConfig(label_scope="within_relation").label_scope
    'within_relation'
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from precompute.lenses.readout import lens_logits
from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.model.pooled import pooled_states
from precompute.stats.probing import (
    first_above,
    keep_frequent,
    knows_layer,
    probe_layer,
    template_baseline,
)
from precompute.types import BaseConfig, Item, RunContext

LABEL_KINDS = ("model_answer", "gold_answer")
LABEL_SCOPES = ("all", "within_relation")


@dataclass(frozen=True)
class ProbesConfig(BaseConfig):
    """Defaults (METHODS.md E2, "ours": seed 000 gives none).

    ``C = 1.0``, lbfgs, ``max_iter = 1000``, 5 folds, ``m = 10`` examples per class, seed 0
    (METHODS.md E2). ``n_items = 300`` and ``max_tokens = 64`` are ours (CPU budget; E2 suggests
    ~1,000 facts); the embedded runs on small fact sets lower ``min_per_class`` (recorded in the
    run's config). ``label_scope`` (``all`` or ``within_relation``) and ``random_control``: see
    the module docstring (ours, issue 10).
    """

    label_kind: str = "model_answer"
    min_per_class: int = 10
    n_folds: int = 5
    C: float = 1.0
    max_iter: int = 1000
    seed: int = 0
    knows_frac: float = 0.9
    knows_abs: float = 0.8
    n_items: int = 300
    max_tokens: int = 64
    label_scope: str = "all"
    random_control: bool = False


def _subsets(labels: np.ndarray, groups, cfg: ProbesConfig) -> list[tuple[str, np.ndarray]]:
    """``(prompt_id prefix, item indices)`` of each probe: all items, or one per relation."""
    if cfg.label_scope not in LABEL_SCOPES:
        raise ValueError(f"Unknown label_scope {cfg.label_scope!r}; use one of {LABEL_SCOPES}.")
    if cfg.label_scope == "all":
        return [("", np.arange(len(labels)))]
    if groups is None:
        raise ValueError("label_scope=within_relation needs a relation on every item.")
    groups = np.asarray(groups, dtype=object)
    out = []
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)
        counts = Counter(labels[idx].tolist())
        if sum(c >= cfg.min_per_class for c in counts.values()) >= 2:
            out.append((f"{g}|", idx))
    if not out:
        raise ValueError(
            f"No relation has two answers with >= {cfg.min_per_class} examples each, so no "
            "within-relation probe can be trained. Use more facts or lower min_per_class."
        )
    return out


def probe_records(
    states: np.ndarray,
    labels: np.ndarray | list,
    cfg: ProbesConfig,
    n_layers: int,
    groups: np.ndarray | list | None = None,
    random_states: np.ndarray | None = None,
) -> list[dict]:
    """Probe every state and return ``metrics`` records.

    Args:
        states: ``(S, N, D)`` last-position residual states, ``S = L+1`` (the layout of
            :class:`precompute.model.pooled.PooledStates`).
        labels: ``(N,)`` labels.
        cfg: Config (folds, ``C``, ``min_per_class``, thresholds, ``label_scope``).
        n_layers: ``L`` (for relative depth).
        groups: Optional ``(N,)`` template / relation of each item: adds ``template_acc`` rows
            (the same value at every state: a flat reference line) when probing all items.
        random_states: Optional ``(S, N, D)`` states of a randomly initialised twin model: adds
            ``random_init_acc`` rows.

    Raises:
        ValueError: Too few examples per class, a single class, or mismatched shapes.
    """
    states = np.asarray(states)
    labels = np.asarray(labels)
    if states.ndim != 3 or states.shape[1] != len(labels):
        raise ValueError(
            f"States must be (S, N, D) with one label per item; got {states.shape}, {len(labels)}."
        )
    if cfg.min_per_class < cfg.n_folds:
        raise ValueError(f"min_per_class ({cfg.min_per_class}) must be >= n_folds ({cfg.n_folds}).")
    base = dict(layer_kind="resid", n_layers=n_layers, variant=cfg.label_kind)
    subsets = _subsets(labels, groups, cfg)
    recs: list[dict] = []
    acc = np.zeros((states.shape[0], 0))  # (S, folds so far)
    counts = np.zeros((states.shape[0], 2))  # (S, [classes, examples])
    for prefix, idx in subsets:
        keep = idx[keep_frequent(labels[idx], cfg.min_per_class)]
        y = labels[keep]
        tmpl = None
        if groups is not None and cfg.label_scope == "all":
            tmpl = template_baseline(y, np.asarray(groups)[keep], cfg.n_folds, cfg.seed)
        fold_acc = []
        for i in range(states.shape[0]):
            r = probe_layer(states[i][keep], y, cfg.n_folds, cfg.C, cfg.max_iter, cfg.seed)
            fold_acc.append(r.probe_acc)
            per_fold = {
                "probe_acc": r.probe_acc,
                "probe_f1": r.probe_f1,
                "control_acc": r.control_acc,
                "selectivity": r.selectivity,
                "majority_acc": r.majority_acc,
            }
            if tmpl is not None:
                per_fold["template_acc"] = tmpl
            if random_states is not None:
                rand = probe_layer(
                    random_states[i][keep], y, cfg.n_folds, cfg.C, cfg.max_iter, cfg.seed
                )
                per_fold["random_init_acc"] = rand.probe_acc
            for metric, vals in per_fold.items():
                for k, v in enumerate(vals):
                    recs.append(
                        dict(
                            base,
                            layer=i,
                            metric=metric,
                            value=float(v),
                            unit="fraction",
                            prompt_id=f"{prefix}fold-{k}",
                        )
                    )
            counts[i] += (r.n_classes, r.n_examples)
        acc = np.concatenate([acc, np.stack(fold_acc)], axis=1)
    for i in range(states.shape[0]):
        for metric, v in (("n_classes", counts[i, 0]), ("n_examples", counts[i, 1])):
            recs.append(dict(base, layer=i, metric=metric, value=float(v), unit="count"))
        if cfg.label_scope != "all":
            recs.append(
                dict(base, layer=i, metric="n_relations", value=float(len(subsets)), unit="count")
            )
    mean_acc = acc.mean(1).tolist()
    summary = [("knows_layer", knows_layer(mean_acc, cfg.knows_frac))]
    summary.append(("knows_layer_abs", first_above(mean_acc, cfg.knows_abs)))
    for metric, k in summary:
        if k is not None:
            recs.append(
                dict(base, layer=k, metric=metric, value=float(k), unit="count", grp="summary")
            )
    return recs


def labels_for(lm: LoadedModel, items: list[Item], answer_ids: list[int], kind: str) -> list[str]:
    """Class labels: the model's own answer token, or the first token of the gold attribute."""
    if kind == "model_answer":
        return [lm.tokenizer.decode([i]) for i in answer_ids]
    if kind == "gold_answer":
        out = []
        for item in items:
            gold = item.fields.get("attribute") or item.fields.get("answer")
            if not gold:
                raise ValueError(f"Item {item.prompt_id} has no gold answer for label_kind=gold.")
            first = lm.tokenizer(" " + str(gold).strip(), add_special_tokens=False).input_ids[0]
            out.append(lm.tokenizer.decode([first]))
        return out
    raise ValueError(f"Unknown label_kind {kind!r}; use one of {LABEL_KINDS}.")


def answer_from_states(lm: LoadedModel, states: torch.Tensor) -> int:
    """Return the model's argmax token at the last position, from its final residual state.

    The lens read-out of ``h_L`` is exactly how the model computes its logits, so the answer
    needs no second forward pass. ``states``: ``(L+1, T, D)``.
    """
    with torch.inference_mode():
        h_last = states[-1, -1:].to(lm.device)  # (1, D)
        logits = lens_logits(lm, h_last)  # (1, V)
    return int(logits[0].argmax())


def answer_collector(lm: LoadedModel, answers: dict[int, int]):
    """Build an ``on_states`` callback for :func:`precompute.model.pooled.pooled_states`."""

    def on_states(j: int, states: torch.Tensor, ids: torch.Tensor) -> None:
        answers[j] = answer_from_states(lm, states)

    return on_states


def random_twin(lm: LoadedModel, seed: int = 0) -> LoadedModel:
    """A randomly initialised model of the same architecture and tokenizer (seeded): a control."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = copy.deepcopy(lm.bridge.original_model.config)
    hf = AutoModelForCausalLM.from_config(config).to(torch.float32).eval()
    bridge = TransformerBridge.boot_transformers(lm.spec.hf_id, hf_model=hf, tokenizer=lm.tokenizer)
    bridge.to(lm.device)
    bridge.eval()
    prov = {"source": "random-init", "seed": seed, "architecture_of": lm.name}
    return LoadedModel(f"{lm.name}-random", bridge, lm.tokenizer, lm.spec, prov)


def process(
    lm: LoadedModel, items: list[Item], cfg: ProbesConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: probe all items at once (the method runs with ``chunk_size=None``)."""
    answers: dict[int, int] = {}
    texts = [it.text for it in items]
    reps = pooled_states(lm, texts, cfg.max_tokens, on_states=answer_collector(lm, answers))
    ids = [answers[j] for j in range(len(items))]
    labels = labels_for(lm, items, ids, cfg.label_kind)
    groups = [it.fields.get("relation") or it.fields.get("relation_id") for it in items]
    groups = None if any(g is None for g in groups) else groups
    rand = None
    if cfg.random_control:
        rand = pooled_states(random_twin(lm, cfg.seed), texts, cfg.max_tokens).last
    recs = probe_records(reps.last, np.array(labels), cfg, lm.n_layers, groups, rand)
    return {"metrics": ctx.metrics(recs)}


METHOD = Method(
    name="probes",
    summary="Linear probes: per-layer decodability of the model's answer, with controls.",
    config_cls=ProbesConfig,
    dataset="known_1000",
    process=process,
    chunk_size=None,
)
