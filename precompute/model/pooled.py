"""Per-stimulus representations of every residual state, from one forward pass per text.

The representation methods (METHODS.md E1-E4: intrinsic dimension, probes, RSA, Skean's quality
metrics) all need one vector per (stimulus, layer). :func:`pooled_states` runs the model once per
text with :func:`precompute.model.internals.residual_states` and reduces ``h_0..h_L`` on the fly to

* ``mean``: the mean over positions ``1..T-1`` (position 0 / BOS excluded, METHODS.md 0.5 and E3),
* ``last``: the state at the last position ``T-1``,

so only one prompt's hidden states ``(L+1, T, D)`` exist at a time. Methods that need the
token-level states of each prompt (prompt entropy, curvature) pass ``on_states``: it is called
with every prompt's full states before they are dropped, so every analysis shares the same pass.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> ps = pooled_states(lm, ["the cat sat on the mat", "the dog sat on the log"], max_tokens=32)
    >>> ps.mean.shape == (lm.n_layers + 1, 2, lm.d_model)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from precompute.model.internals import residual_states
from precompute.model.load import LoadedModel

POOLINGS = ("mean", "last")

#: ``on_states(index, states, ids)``: ``states`` ``(L+1, T, D)`` float32, ``ids`` ``(T,)``.
StatesCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass
class PooledStates:
    """Pooled residual states of ``N`` texts. ``S = L+1`` states, ``D = d_model``.

    Attributes:
        mean: ``(S, N, D)`` float32, mean over positions ``1..T-1`` (BOS / position 0 excluded).
        last: ``(S, N, D)`` float32, the last position's state.
        n_tokens: ``(N,)`` int64, tokens each text had after truncation to ``max_tokens``.
        truncated: ``(N,)`` bool, the text was longer than ``max_tokens``.
    """

    mean: np.ndarray
    last: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray

    @property
    def n_states(self) -> int:
        """``L+1``."""
        return int(self.mean.shape[0])

    def pooled(self, pooling: str) -> np.ndarray:
        """Return the ``(S, N, D)`` array of one pooling (``mean`` or ``last``)."""
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}; use one of {POOLINGS}.")
        return self.mean if pooling == "mean" else self.last


@torch.inference_mode()
def pooled_states(
    lm: LoadedModel,
    texts: Sequence[str],
    max_tokens: int | None = 128,
    on_states: StatesCallback | None = None,
) -> PooledStates:
    """Run the model once per text and pool every residual state ``h_0..h_L``.

    Args:
        lm: Loaded model (each forward pass holds ``lm.lock``, via ``residual_states``).
        texts: The stimuli, in the order their rows should have.
        max_tokens: Keep the first ``max_tokens`` tokens of each text (``None``: all).
        on_states: Optional ``(index, states (L+1, T, D), ids (T,))`` callback, called once per text
            with the full states, for analyses that need token-level states in the same pass.

    Returns:
        The pooled states, float32 numpy.

    Raises:
        ValueError: No texts, or a text with fewer than 2 tokens (the mean excludes position 0,
            so it would be empty).
    """
    if len(texts) == 0:
        raise ValueError("pooled_states needs at least one text; got none.")
    n_states, d = lm.n_layers + 1, lm.d_model
    mean = np.empty((n_states, len(texts), d), dtype=np.float32)
    last = np.empty((n_states, len(texts), d), dtype=np.float32)
    n_tokens = np.empty(len(texts), dtype=np.int64)
    truncated = np.zeros(len(texts), dtype=bool)
    for j, text in enumerate(texts):
        ids = lm.tokenize(text)  # (1, T_full)
        if max_tokens is not None and ids.shape[1] > max_tokens:
            truncated[j] = True
            ids = ids[:, :max_tokens]
        if ids.shape[1] < 2:
            raise ValueError(
                f"Text {j} ({text[:40]!r}) has {ids.shape[1]} token(s); pooling needs at least 2 "
                "because position 0 (BOS / first token) is excluded from the mean. "
                "Use a longer text."
            )
        states, _ = residual_states(lm, ids)  # (S, T, D)
        mean[:, j] = states[:, 1:].mean(1).cpu().numpy()  # (S, D)
        last[:, j] = states[:, -1].cpu().numpy()  # (S, D)
        n_tokens[j] = ids.shape[1]
        if on_states is not None:
            on_states(j, states, ids[0])
        del states
    return PooledStates(mean=mean, last=last, n_tokens=n_tokens, truncated=truncated)
