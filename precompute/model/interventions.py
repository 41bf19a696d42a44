"""Whole-layer interventions (METHODS.md C1, C2): delete a block, or run two blocks swapped.

Two sweeps compute the same numbers:

* the **reference** sweep does what the paper's code (LAD ``model_intervention.py``) does: for every
  intervention it recomputes the normal run and runs the intervened model from the first block --
  deletion by zeroing ``blocks.l.hook_attn_out`` / ``hook_mlp_out`` through bridge hooks, a swap by
  permuting the model's own block list for one forward pass;
* the **fast** sweep runs the model once, keeping the input of every block (the residual state
  ``h_l`` and the keyword arguments the model hands each block: attention mask, rotary embeddings,
  position ids). Blocks before the intervened one are unchanged, so an intervention at block ``l``
  starts from the cached ``h_l`` and runs only blocks ``l..L-1``. All interventions waiting for the
  same block are run through it as one batch ("wavefront"), and the final norm + unembedding is
  applied in chunks.

Blocks are the model's own decoder layers (``original_model.model.layers`` for Llama / Gemma,
``.transformer.h`` for GPT-2, ``.gpt_neox.layers`` for GPT-NeoX), wrapped by the TransformerBridge,
so their hooks still fire. A block keeps the arguments the model gave it in the normal run: on
Gemma-3, whose layers alternate sliding-window and global attention with different rotary bases, a
moved block keeps its own attention type (the reference swap permutes ``config.layer_types``
with the blocks so that both sweeps agree).

Metrics compare the normal output distribution ``p`` with the intervened one ``q`` at positions
``1..T-1`` (position 0 excluded, as LAD drops ``logits[0]``): KL(p || q) in nats, top-1 agreement,
entropies in bits (probabilities clamped at 1e-9, as LAD), and the next-token loss in nats, aligned
to the predicting position (positions ``1..T-2``; LAD's table shifts loss by one, METHODS.md C1).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> ids = lm.tokenize("The cat sat on the mat and the dog sat on the log.")
    >>> m = sweep(lm, ids, [Intervention("swap", 1, other=1)])
    >>> float(m["kl"][0]), float(m["top1_same"][0])
    (0.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from precompute.model.load import LoadedModel
from precompute.model.replay import Replay, block_stack, capture, forward, read_out, run_blocks

COMPONENTS = ("block", "attn", "mlp")
KINDS = ("delete", "swap")
ENTROPY_CLAMP = 1e-9  # LAD clamps probabilities before log2

#: metric: unit. ``delta_*`` = intervened - normal (positive loss change = the model got worse).
METRIC_UNITS = {
    "kl": "nats",
    "top1_same": "fraction",
    "entropy_normal": "bits",
    "entropy_intervened": "bits",
    "delta_entropy": "bits",
    "loss_normal": "nats",
    "loss_intervened": "nats",
    "delta_loss": "nats",
}


@dataclass(frozen=True)
class Intervention:
    """One whole-layer intervention.

    Attributes:
        kind: ``delete`` (block ``layer`` writes nothing) or ``swap`` (blocks ``layer`` and
            ``other`` exchange places in the execution order).
        layer: Block index ``l`` (for a swap, the first of the pair).
        component: For ``delete``: ``block`` (attention and MLP), ``attn`` or ``mlp`` only.
        other: For ``swap``: the partner block; ``None`` means ``layer + 1``. ``other == layer``
            is the identity (a no-op, used by the tests).
    """

    kind: str
    layer: int
    component: str = "block"
    other: int | None = None

    @property
    def partner(self) -> int:
        """The block that a swap exchanges with ``layer``."""
        return self.layer + 1 if self.other is None else self.other


def validate(lm: LoadedModel, iv: Intervention) -> None:
    """Check an intervention against the model; raise a ``ValueError`` that says what is valid."""
    n = lm.n_layers
    if iv.kind not in KINDS:
        raise ValueError(f"Unknown intervention {iv.kind!r}; use one of {KINDS}.")
    if iv.kind == "delete":
        if iv.component not in COMPONENTS:
            raise ValueError(f"Unknown component {iv.component!r}; use one of {COMPONENTS}.")
        if not 0 <= iv.layer < n:
            raise ValueError(f"Layer {iv.layer} is out of range: {lm.name} has blocks 0..{n - 1}.")
        return
    if not (0 <= iv.layer < n and 0 <= iv.partner < n):
        raise ValueError(
            f"Cannot swap blocks {iv.layer} and {iv.partner}: {lm.name} has blocks 0..{n - 1} "
            f"(adjacent pairs start at 0..{n - 2})."
        )
    check_swappable(lm, iv.layer, iv.partner)


def check_swappable(lm: LoadedModel, a: int, b: int) -> None:
    """Blocks can exchange places only if they have the same parameter shapes."""
    blocks = block_stack(lm)
    shapes_a = [tuple(p.shape) for p in blocks[a].parameters()]
    shapes_b = [tuple(p.shape) for p in blocks[b].parameters()]
    if shapes_a != shapes_b:
        raise ValueError(
            f"Blocks {a} and {b} of {lm.name} have different parameter shapes, so they cannot be "
            "swapped."
        )


def check_ids(ids: torch.Tensor) -> None:
    """Interventions compare positions ``1..T-1``, so a prompt needs at least two tokens."""
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"Expected token ids of shape (1, T), got {tuple(ids.shape)}.")
    if ids.shape[1] < 2:
        raise ValueError(
            f"The prompt has {ids.shape[1]} token(s); a layer intervention needs at least 2 "
            "(position 0 is excluded from the comparison). Type a longer prompt."
        )


# --------------------------------------------------------------------------------------------
# The normal run, cached block inputs, and running blocks one by one


#: The normal run with every block's input kept (see ``precompute.model.replay.Replay``).
NormalRun = Replay


def normal_run(lm: LoadedModel, ids: torch.Tensor) -> Replay:
    """Run the model once (one locked replay step), keeping each block's input and arguments."""
    check_ids(ids)
    return capture(lm, ids)


def _zero(t: torch.Tensor, hook: Any = None) -> torch.Tensor:
    return torch.zeros_like(t)


def zero_hooks(layer: int, component: str) -> list[tuple[str, Any]]:
    """Bridge hooks that delete a block's attention and/or MLP output (LAD's ablation)."""
    names = {"block": ("attn", "mlp"), "attn": ("attn",), "mlp": ("mlp",)}[component]
    return [(f"blocks.{layer}.hook_{n}_out", _zero) for n in names]


def run_block(
    lm: LoadedModel, run: Replay, j: int, x: torch.Tensor, component: str | None = None
) -> torch.Tensor:
    """Run block ``j`` on states ``x`` ``(B, T, D)``; ``component`` zeroes its attn/mlp output.

    One locked replay step (the caller does not hold ``lm.lock``).
    """
    return run_blocks(lm, run, x, [j], zero_hooks(j, component) if component else ())


def _prefix(lm: LoadedModel, iv: Intervention) -> tuple[int, list[tuple[int, str | None]], int]:
    """(start state index, blocks to run one by one with their ablation, block to join at)."""
    if iv.kind == "delete":
        if iv.component == "block":
            return iv.layer, [], iv.layer + 1
        return iv.layer, [(iv.layer, iv.component)], iv.layer + 1
    lo, hi = sorted((iv.layer, iv.partner))
    order = list(range(lo, hi + 1))
    order[0], order[-1] = order[-1], order[0]
    return lo, [(j, None) for j in order], hi + 1


@torch.inference_mode()
def final_states_fast(
    lm: LoadedModel, run: NormalRun, interventions: Sequence[Intervention]
) -> torch.Tensor:
    """Return the final residual states ``(n, T, D)`` of every intervened model (cached run).

    Each intervention starts at its own cached ``h_l``; then, block by block, every intervention
    that has reached block ``j`` is run through it in one batch.
    """
    n_layers = lm.n_layers
    joins: dict[int, list[tuple[int, torch.Tensor]]] = {j: [] for j in range(n_layers + 1)}
    for k, iv in enumerate(interventions):  # each block run is one locked replay step
        start, prefix, join = _prefix(lm, iv)
        x = run.states[start][None]  # (1, T, D)
        for j, comp in prefix:
            x = run_block(lm, run, j, x, comp)
        joins[join].append((k, x[0]))
    order: list[int] = []
    x = run.states[:0]  # (0, T, D)
    for j in range(n_layers + 1):
        if joins[j]:
            order += [k for k, _ in joins[j]]
            x = torch.cat([x, torch.stack([s for _, s in joins[j]])])
        if j < n_layers and len(order):
            x = run_block(lm, run, j, x)  # (B, T, D)
    out = torch.empty_like(x)
    out[torch.tensor(order, dtype=torch.long)] = x
    return out.float()


# --------------------------------------------------------------------------------------------
# The reference: a full forward pass per intervention, through the model's own forward


@torch.inference_mode()
def reference_logits(lm: LoadedModel, ids: torch.Tensor, iv: Intervention) -> torch.Tensor:
    """Logits ``(T, V)`` of the intervened model from a full forward pass (LAD's way)."""
    if iv.kind == "delete":
        logits = forward(lm, ids, fwd_hooks=zero_hooks(iv.layer, iv.component))
    else:
        logits = forward(lm, ids, swap=(iv.layer, iv.partner))
    return logits[0].float()


# --------------------------------------------------------------------------------------------
# Metrics


def compare(
    logits_normal: torch.Tensor, logits_int: torch.Tensor, ids: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-intervention metrics, averaged over positions.

    Args:
        logits_normal: ``(T, V)``.
        logits_int: ``(n, T, V)`` intervened logits.
        ids: ``(T,)`` input ids (for the next-token loss).

    Returns:
        ``{metric: (n,)}`` for the metrics in ``METRIC_UNITS``; the loss metrics are absent for a
        two-token prompt (no position in ``1..T-2`` has a next token).
    """
    lp_n = torch.log_softmax(logits_normal.float()[1:], -1)  # (T-1, V)
    lp_i = torch.log_softmax(logits_int.float()[:, 1:], -1)  # (n, T-1, V)
    p_n = lp_n.exp()
    kl = (p_n * (lp_n - lp_i)).sum(-1).clamp_min(0.0)  # (n, T-1)
    same = (lp_n.argmax(-1) == lp_i.argmax(-1)).float()  # (n, T-1)
    h_n = _entropy_bits(p_n)  # (T-1,)
    h_i = _entropy_bits(lp_i.exp())  # (n, T-1)
    out = {
        "kl": kl.mean(-1),
        "top1_same": same.mean(-1),
        "entropy_normal": h_n.mean().expand(len(kl)),
        "entropy_intervened": h_i.mean(-1),
        "delta_entropy": (h_i - h_n).mean(-1),
    }
    n_pos = ids.shape[-1]
    if n_pos >= 3:
        nxt = ids.reshape(-1)[2:]  # targets of positions 1..T-2
        loss_n = -lp_n[:-1].gather(-1, nxt[:, None])[:, 0]  # (T-2,)
        loss_i = -lp_i[:, :-1].gather(-1, nxt[None, :, None].expand(len(kl), -1, 1))[..., 0]
        out["loss_normal"] = loss_n.mean().expand(len(kl))
        out["loss_intervened"] = loss_i.mean(-1)
        out["delta_loss"] = (loss_i - loss_n).mean(-1)
    return out


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log2(p.clamp_min(ENTROPY_CLAMP))).sum(-1)


@torch.inference_mode()
def sweep(
    lm: LoadedModel,
    ids: torch.Tensor,
    interventions: Sequence[Intervention],
    method: str = "fast",
    chunk_elems: int = 2**26,
) -> dict[str, torch.Tensor]:
    """Metrics ``{metric: (n,)}`` of every intervention on one prompt.

    Args:
        lm: Loaded model.
        ids: ``(1, T)`` token ids, ``T >= 2``.
        interventions: What to do, one entry per intervened model.
        method: ``fast`` (cached normal run, blocks from ``h_l``) or ``reference`` (LAD: normal
            run recomputed and a full forward per intervention).
        chunk_elems: Upper bound on intervened logits held at once (fast sweep).
    """
    check_ids(ids)
    for iv in interventions:
        validate(lm, iv)
    if method == "reference":
        parts = []
        for iv in interventions:
            normal = forward(lm, ids)[0].float()  # recomputed per intervention, as LAD does
            parts.append(compare(normal, reference_logits(lm, ids, iv)[None], ids[0]))
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if method != "fast":
        raise ValueError(f"Unknown sweep {method!r}; use 'fast' or 'reference'.")
    run = normal_run(lm, ids)
    final = final_states_fast(lm, run, interventions)  # (n, T, D)
    n_pos, vocab = run.logits.shape
    step = max(1, chunk_elems // max(n_pos * vocab, 1))
    parts = [
        compare(run.logits, read_out(lm, final[s : s + step]), ids[0])
        for s in range(0, len(final), step)
    ]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}


@torch.inference_mode()
def intervened_logits(lm: LoadedModel, ids: torch.Tensor, iv: Intervention) -> tuple:
    """Return ``(normal, intervened)`` logits ``(T, V)`` of one intervention (fast path; live)."""
    check_ids(ids)
    validate(lm, iv)
    run = normal_run(lm, ids)
    final = final_states_fast(lm, run, [iv])
    return run.logits, read_out(lm, final)[0]


def records(
    metrics: dict[str, torch.Tensor],
    interventions: Sequence[Intervention],
    n_layers: int,
    prompt_id: str,
    variant_of: Any = None,
) -> list[dict]:
    """Rows for ``RunContext.metrics``: one per (intervention, metric).

    ``layer_kind`` is ``block`` for deletions and ``pair`` for swaps (``layer`` = first block).
    """
    rows = []
    for k, iv in enumerate(interventions):
        variant = iv.component if iv.kind == "delete" else "adjacent"
        if variant_of is not None:
            variant = variant_of(iv)
        for metric, vals in metrics.items():
            val = float(vals[k])
            if not math.isfinite(val):
                continue
            rows.append(
                dict(
                    prompt_id=prompt_id,
                    variant=variant,
                    layer=iv.layer,
                    layer_kind="block" if iv.kind == "delete" else "pair",
                    n_layers=n_layers,
                    metric=metric,
                    value=val,
                    unit=METRIC_UNITS[metric],
                )
            )
    return rows


# --------------------------------------------------------------------------------------------
# Shared by the two methods: one document set, every layer


def sweep_items(
    lm: LoadedModel,
    items: Sequence[Any],
    interventions: Sequence[Intervention],
    max_tokens: int,
    method: str = "fast",
    chunk_elems: int = 2**26,
) -> list[dict]:
    """Metric records for every item (documents shorter than 3 tokens are skipped)."""
    rows: list[dict] = []
    for item in items:
        ids = lm.tokenize(item.text, max_tokens=max_tokens)  # (1, T)
        if ids.shape[1] < 3:
            continue
        m = sweep(lm, ids, interventions, method=method, chunk_elems=chunk_elems)
        rows += records(m, interventions, lm.n_layers, item.prompt_id)
    return rows


def delete_all(n_layers: int, components: Sequence[str] = ("block",)) -> list[Intervention]:
    """List the deletion of every block, for each component."""
    return [Intervention("delete", ell, c) for c in components for ell in range(n_layers)]


def swap_all(n_layers: int) -> list[Intervention]:
    """Every adjacent swap ``(l, l+1)``, ``l = 0..L-2``."""
    return [Intervention("swap", ell) for ell in range(n_layers - 1)]


def parse_components(text: str) -> tuple[str, ...]:
    """``"block,attn"`` -> ``("block", "attn")``, rejecting unknown names."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in COMPONENTS]
    if bad or not parts:
        raise ValueError(f"variants must be a comma-separated subset of {COMPONENTS}: {text!r}.")
    return parts
