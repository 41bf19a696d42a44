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

Rows (``metrics``): per fold (``prompt_id = fold-k``) and state, ``probe_acc``, ``probe_f1``
(macro), ``control_acc``, ``selectivity``, ``majority_acc`` (fractions); per state ``n_classes`` and
``n_examples`` (counts); one ``knows_layer`` and one ``knows_layer_abs`` row (``grp = summary``,
``layer`` = that state, ``value`` = its index). ``metrics_agg`` then gives the mean over folds.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 5))
    >>> y = (x[:, 0] > 0).astype(int)
    >>> probe_layer(x, y).probe_acc.mean() > 0.8
    True
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from precompute.lenses.readout import lens_logits
from precompute.methods import Method
from precompute.model.load import LoadedModel
from precompute.model.pooled import pooled_states
from precompute.types import BaseConfig, Item, RunContext

LABEL_KINDS = ("model_answer", "gold_answer")


@dataclass(frozen=True)
class ProbesConfig(BaseConfig):
    """Defaults (METHODS.md E2, "ours": seed 000 gives none).

    ``C = 1.0``, lbfgs, ``max_iter = 1000``, 5 folds, ``m = 10`` examples per class, seed 0
    (METHODS.md E2). ``n_items = 300`` and ``max_tokens = 64`` are ours (CPU budget; E2 suggests
    ~1,000 facts); the embedded runs on small fact sets lower ``min_per_class`` (recorded in the
    run's config).
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


@dataclass
class ProbeResult:
    """Cross-validated scores of one state, one entry per fold.

    Attributes:
        probe_acc, probe_f1, control_acc, majority_acc: ``(folds,)`` fractions.
        n_classes: Number of classes kept.
        n_examples: Number of examples kept.
    """

    probe_acc: np.ndarray
    probe_f1: np.ndarray
    control_acc: np.ndarray
    majority_acc: np.ndarray
    n_classes: int
    n_examples: int

    @property
    def selectivity(self) -> np.ndarray:
        """``probe_acc - control_acc`` per fold (Hewitt & Liang 2019)."""
        return self.probe_acc - self.control_acc


def keep_frequent(labels: np.ndarray | list, min_per_class: int) -> np.ndarray:
    """Boolean mask of the examples whose class has at least ``min_per_class`` examples.

    Raises:
        ValueError: Fewer than two classes are left.
    """
    labels = np.asarray(labels)
    counts = Counter(labels.tolist())
    keep = np.array([counts[v] >= min_per_class for v in labels.tolist()], dtype=bool)
    n_left = len({v for v, c in counts.items() if c >= min_per_class})
    if n_left < 2:
        top = ", ".join(f"{v!r}: {c}" for v, c in counts.most_common(5))
        raise ValueError(
            f"Probes need at least two classes with >= {min_per_class} examples each; "
            f"{n_left} left (largest classes: {top}). Use more items or lower min_per_class."
        )
    return keep


def _check_xy(x: np.ndarray, y: np.ndarray, n_folds: int) -> None:
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"Features must be (N, D) with one label each; got {x.shape}, {len(y)}.")
    if not np.isfinite(x).all():
        raise ValueError("Features contain NaN or infinite values; the probe cannot be fitted.")
    counts = Counter(np.asarray(y).tolist())
    if len(counts) < 2:
        raise ValueError("Probes need at least two classes; all labels are the same.")
    small = {k: c for k, c in counts.items() if c < n_folds}
    if small:
        raise ValueError(
            f"Stratified {n_folds}-fold cross-validation needs >= {n_folds} examples per class; "
            f"these classes have fewer: {small}. Drop them (keep_frequent) or use fewer folds."
        )


def _pipeline(c: float, max_iter: int, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    )


def probe_layer(
    x: np.ndarray,
    y: np.ndarray,
    n_folds: int = 5,
    c: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> ProbeResult:
    """Cross-validate a standardised logistic-regression probe and its controls on one state.

    Args:
        x: Features ``(N, D)``.
        y: Labels ``(N,)`` (any hashable values).
        n_folds: Stratified folds (shuffled with ``seed``).
        c: Inverse L2 strength.
        max_iter: lbfgs iterations.
        seed: Seed of the folds and of the control shuffle.

    Returns:
        Per-fold scores.

    Raises:
        ValueError: Bad shapes, non-finite features, one class, or a class smaller than the folds.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    _check_xy(x, y, n_folds)
    y_ctrl = np.random.default_rng(seed).permutation(y)  # same class counts, no link to x
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    acc, f1, ctrl, maj = [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in folds.split(x, y):
            model = _pipeline(c, max_iter, seed).fit(x[train], y[train])
            pred = model.predict(x[test])
            acc.append(accuracy_score(y[test], pred))
            f1.append(f1_score(y[test], pred, average="macro", zero_division=0))
            control = _pipeline(c, max_iter, seed).fit(x[train], y_ctrl[train])
            ctrl.append(accuracy_score(y_ctrl[test], control.predict(x[test])))
            top = Counter(y[train].tolist()).most_common(1)[0][0]
            maj.append(float(np.mean(y[test] == top)))
    return ProbeResult(
        probe_acc=np.array(acc),
        probe_f1=np.array(f1),
        control_acc=np.array(ctrl),
        majority_acc=np.array(maj),
        n_classes=len(set(y.tolist())),
        n_examples=len(y),
    )


def template_baseline(
    y: np.ndarray, groups: np.ndarray, n_folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Per-fold accuracy of guessing from the prompt's template alone (METHODS.md E2 pitfall).

    Each test example gets the most frequent training label among examples of its group (the
    relation / template), or the overall majority when its group is unseen. Same folds as
    :func:`probe_layer` (same labels, folds and seed).
    """
    from sklearn.model_selection import StratifiedKFold

    y, groups = np.asarray(y), np.asarray(groups)
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    out = []
    for train, test in folds.split(np.zeros(len(y)), y):
        overall = Counter(y[train].tolist()).most_common(1)[0][0]
        best = {
            g: Counter(y[train][groups[train] == g].tolist()).most_common(1)[0][0]
            for g in set(groups[train].tolist())
        }
        pred = np.array([best.get(g, overall) for g in groups[test].tolist()], dtype=object)
        out.append(float(np.mean(pred == y[test].astype(object))))
    return np.array(out)


def knows_layer(acc: np.ndarray | list, frac: float = 0.9) -> int:
    """Return the first state with accuracy >= ``frac`` x the best (METHODS.md B3 step 7)."""
    acc = np.asarray(acc, dtype=float)
    return int(np.argmax(acc >= frac * acc.max()))


def first_above(acc: np.ndarray | list, threshold: float) -> int | None:
    """First state with accuracy >= ``threshold``; ``None`` when no state reaches it."""
    hits = np.flatnonzero(np.asarray(acc, dtype=float) >= threshold)
    return int(hits[0]) if len(hits) else None


def probe_records(
    states: np.ndarray,
    labels: np.ndarray | list,
    cfg: ProbesConfig,
    n_layers: int,
    groups: np.ndarray | list | None = None,
) -> list[dict]:
    """Probe every state and return ``metrics`` records.

    Args:
        states: ``(S, N, D)`` last-position residual states, ``S = L+1`` (the layout of
            :class:`precompute.model.pooled.PooledStates`).
        labels: ``(N,)`` labels.
        cfg: Config (folds, ``C``, ``min_per_class``, thresholds).
        n_layers: ``L`` (for relative depth).
        groups: Optional ``(N,)`` template / relation of each item: adds ``template_acc`` rows
            (the same value at every state: a flat reference line).

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
    keep = keep_frequent(labels, cfg.min_per_class)
    y = labels[keep]
    base = dict(layer_kind="resid", n_layers=n_layers, variant=cfg.label_kind)
    recs: list[dict] = []
    mean_acc = []
    tmpl = None
    if groups is not None:
        tmpl = template_baseline(y, np.asarray(groups)[keep], cfg.n_folds, cfg.seed)
    for i in range(states.shape[0]):
        r = probe_layer(states[i][keep], y, cfg.n_folds, cfg.C, cfg.max_iter, cfg.seed)
        mean_acc.append(float(r.probe_acc.mean()))
        per_fold = {
            "probe_acc": r.probe_acc,
            "probe_f1": r.probe_f1,
            "control_acc": r.control_acc,
            "selectivity": r.selectivity,
            "majority_acc": r.majority_acc,
        }
        if tmpl is not None:
            per_fold["template_acc"] = tmpl
        for metric, vals in per_fold.items():
            for k, v in enumerate(vals):
                recs.append(
                    dict(
                        base,
                        layer=i,
                        metric=metric,
                        value=float(v),
                        unit="fraction",
                        prompt_id=f"fold-{k}",
                    )
                )
        for metric, v in (("n_classes", r.n_classes), ("n_examples", r.n_examples)):
            recs.append(dict(base, layer=i, metric=metric, value=float(v), unit="count"))
    k = knows_layer(mean_acc, cfg.knows_frac)
    recs.append(
        dict(base, layer=k, metric="knows_layer", value=float(k), unit="count", grp="summary")
    )
    k_abs = first_above(mean_acc, cfg.knows_abs)
    if k_abs is not None:
        recs.append(
            dict(
                base,
                layer=k_abs,
                metric="knows_layer_abs",
                value=float(k_abs),
                unit="count",
                grp="summary",
            )
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


def process(
    lm: LoadedModel, items: list[Item], cfg: ProbesConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Precompute: probe all items at once (the method runs with ``chunk_size=None``)."""
    answers: dict[int, int] = {}
    reps = pooled_states(
        lm, [it.text for it in items], cfg.max_tokens, on_states=answer_collector(lm, answers)
    )
    ids = [answers[j] for j in range(len(items))]
    labels = labels_for(lm, items, ids, cfg.label_kind)
    groups = [it.fields.get("relation") or it.fields.get("relation_id") for it in items]
    groups = None if any(g is None for g in groups) else groups
    recs = probe_records(reps.last, np.array(labels), cfg, lm.n_layers, groups)
    return {"metrics": ctx.metrics(recs)}


METHOD = Method(
    name="probes",
    summary="Linear probes: per-layer decodability of the model's answer, with controls.",
    config_cls=ProbesConfig,
    dataset="known_1000",
    process=process,
    chunk_size=None,
)
