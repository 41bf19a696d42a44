"""Linear-probe statistics (METHODS.md E2): cross-validated probes and their baselines.

Pure numpy + scikit-learn, no model: a standardised multinomial logistic regression per state,
scored by stratified k-fold cross-validation with a fixed seed, beside the controls that give its
accuracy a meaning (a shuffled-label probe, the majority class, the answer guessed from the
template alone), and the "knows" layer read off the accuracy curve.

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
