"""The one block replay: run a shared model block by block, safely under concurrent sessions.

* :func:`block_stack` finds the model's block list (the one way, used everywhere);
* :func:`capture` runs the model once and keeps each block's input state and the arguments the
  model handed it (attention mask, rotary embeddings, position ids; caches dropped);
* :func:`run_blocks` runs any sequence of blocks on a batch of states with those arguments, and
  :func:`run_from` runs blocks ``i..L-1`` and reads the logits out;
* :func:`forward` is a full forward pass with hooks (and optionally a permuted block order);
* :func:`run_rows` runs ``B`` rows of one prompt, optionally computing the shared prefix once
  into a key/value cache and only the last token per row (the "prefix cache" trick).

Locking: every public function here is one *step*. It takes ``lm.lock`` itself and holds it
across hook registration, the forward pass and hook removal (hooks are state on a model shared by
every session), then releases it. Callers never hold ``lm.lock`` around these calls (the lock is
not re-entrant); a long loop of steps (causal tracing over layers) therefore lets other sessions'
short requests in between steps.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> rep = capture(lm, lm.tokenize("The cat sat on the mat."))
    >>> h = run_blocks(lm, rep, rep.states[0][None], range(lm.n_layers))
    >>> bool(torch.allclose(h[0], rep.states[-1], atol=1e-5))
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from precompute.model.internals import final_norm, residual_states, unembed, unembed_weights
from precompute.model.load import LoadedModel
from precompute.model.threads import intra_op_threads

#: Where each architecture family keeps its block list on the Hugging Face model.
BLOCK_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.language_model.layers")

#: ``(hook name, fn(tensor, hook) -> tensor)``: TransformerLens-style bridge hooks.
FwdHook = tuple[str, Callable]
#: ``(module, fn(module, args, kwargs) -> (args, kwargs) | None)``: torch forward pre-hooks.
PreHook = tuple[torch.nn.Module, Callable]


def block_stack(lm: LoadedModel) -> torch.nn.ModuleList:
    """Return the model's list of blocks, in execution order.

    This is the list the model's own forward iterates (``original_model.model.layers`` for
    Llama / Gemma, ``.transformer.h`` for GPT-2, ``.gpt_neox.layers`` for GPT-NeoX); its entries
    are the bridge's wrapped blocks, so bridge hooks still fire.

    Raises:
        ValueError: The architecture keeps its blocks somewhere this code does not know.
    """
    model = lm.bridge.original_model
    for path in BLOCK_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList) and len(obj) == lm.n_layers:
            return obj
    raise ValueError(
        f"Cannot find the block list of {lm.name} ({type(model).__name__}); the block replay "
        f"supports models whose blocks live at one of {BLOCK_PATHS}."
    )


@dataclass
class Replay:
    """One forward pass with every block's input kept.

    Attributes:
        ids: Input ids ``(1, T)``.
        states: Residual states ``h_0..h_L`` ``(L+1, T, D)`` float32 (``h_L`` before the final
            norm).
        logits: The model's logits ``(T, V)`` float32.
        calls: For block ``j``: the positional arguments after the hidden states and the keyword
            arguments the model passed it, caches replaced by ``None`` and ``use_cache=False``.
        cache: Hook activations asked for with ``names`` (batch row 0 dropped: ``(T, D)``).
    """

    ids: torch.Tensor
    states: torch.Tensor
    logits: torch.Tensor
    calls: list[tuple[tuple, dict]]
    cache: dict[str, torch.Tensor] = field(default_factory=dict)


def _is_cache(x: Any) -> bool:
    from transformers.cache_utils import Cache

    return isinstance(x, Cache)


def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@contextlib.contextmanager
def _hooked(
    lm: LoadedModel, fwd_hooks: Sequence[FwdHook] = (), pre_hooks: Sequence[PreHook] = ()
) -> Iterator[None]:
    """Hooks on for the duration; the caller holds ``lm.lock``."""
    handles = [m.register_forward_pre_hook(fn, with_kwargs=True) for m, fn in pre_hooks]
    try:
        with lm.bridge.hooks(fwd_hooks=list(fwd_hooks)) if fwd_hooks else contextlib.nullcontext():
            yield
    finally:
        for h in handles:
            h.remove()


@torch.inference_mode()
def capture(lm: LoadedModel, ids: torch.Tensor, names: Iterable[str] | None = None) -> Replay:
    """Run the model once on ``ids`` ``(1, T)``, keeping each block's input and arguments.

    Args:
        lm: Loaded model.
        ids: ``(1, T)`` token ids.
        names: Hook points whose activations to keep as well (``Replay.cache``).

    Raises:
        ValueError: Not every block was called exactly once (an unsupported architecture).
    """
    blocks = block_stack(lm)
    calls: list[tuple[tuple, dict] | None] = [None] * len(blocks)
    states: list[torch.Tensor | None] = [None] * (len(blocks) + 1)

    def pre(j: int) -> Callable:
        def hook(_mod, args, kwargs):
            states[j] = _hidden_of(args, kwargs)[0]
            rest = {
                k: (None if _is_cache(v) else v) for k, v in kwargs.items() if k != "hidden_states"
            }
            rest["use_cache"] = False
            calls[j] = (tuple(None if _is_cache(a) else a for a in args[1:]), rest)

        return hook

    def post(_mod, _args, out):
        states[-1] = (out[0] if isinstance(out, tuple) else out)[0]

    wanted = set(names or ())
    with lm.lock:
        handles = [
            b.register_forward_pre_hook(pre(j), with_kwargs=True) for j, b in enumerate(blocks)
        ]
        handles.append(blocks[-1].register_forward_hook(post))
        try:
            if wanted:
                logits, act = lm.bridge.run_with_cache(
                    ids, names_filter=lambda n: n in wanted, use_cache=False
                )
                cache = {n: act[n][0] for n in wanted}
            else:
                logits, cache = lm.bridge(ids, use_cache=False), {}
        finally:
            for h in handles:
                h.remove()
    if any(c is None for c in calls) or any(s is None for s in states):
        raise ValueError(f"{lm.name}: not every block was called once in the forward pass.")
    return Replay(
        ids=ids,
        states=torch.stack(states).float(),  # type: ignore[arg-type]
        logits=logits[0].float(),
        calls=calls,  # type: ignore[arg-type]
        cache=cache,
    )


def _run(lm: LoadedModel, rep: Replay, x: torch.Tensor, order: Iterable[int]) -> torch.Tensor:
    blocks = block_stack(lm)
    for j in order:
        args, kwargs = rep.calls[j]
        out = blocks[j](x, *args, **kwargs)
        x = out[0] if isinstance(out, tuple) else out
    return x


@torch.inference_mode()
def run_blocks(
    lm: LoadedModel,
    rep: Replay,
    x: torch.Tensor,
    order: Iterable[int],
    fwd_hooks: Sequence[FwdHook] = (),
) -> torch.Tensor:
    """Run the blocks in ``order`` on states ``x`` ``(B, T, D)``; one locked step.

    Each block gets the arguments it had in the captured run (a moved block keeps its own
    attention type and rotary embeddings). ``fwd_hooks`` are bridge hooks on for the step.
    """
    with lm.lock, _hooked(lm, fwd_hooks):
        return _run(lm, rep, x, order)


@torch.inference_mode()
def run_from(
    lm: LoadedModel,
    rep: Replay,
    x: torch.Tensor,
    start: int,
    fwd_hooks: Sequence[FwdHook] = (),
    last_only: bool = True,
) -> torch.Tensor:
    """Run blocks ``start..L-1`` on ``x`` ``(B, T, D)`` and read out float32 logits.

    Returns:
        ``(B, V)`` logits of the last position (``last_only``) or ``(B, T, V)``.
    """
    with lm.lock, _hooked(lm, fwd_hooks):
        h = _run(lm, rep, x, range(start, lm.n_layers))
        if last_only:
            h = h[:, -1:, :]
        logits = unembed(lm, final_norm(lm, h)).float()
    return logits[:, 0] if last_only else logits


@torch.inference_mode()
def read_out(lm: LoadedModel, h: torch.Tensor) -> torch.Tensor:
    """Float32 logits of residual states ``h`` ``(..., D)``: final norm, then unembedding."""
    with lm.lock:  # the final norm and unembedding are bridge modules with hook points
        return unembed(lm, final_norm(lm, h)).float()


# --------------------------------------------------------------------------------------------
# Full forward passes


def _layer_types_owner(lm: LoadedModel) -> Any:
    cfg = lm.bridge.original_model.config
    for c in (cfg, getattr(cfg, "text_config", None)):
        if c is not None and getattr(c, "layer_types", None) is not None:
            return c
    return None


@contextlib.contextmanager
def _permuted(lm: LoadedModel, a: int, b: int) -> Iterator[None]:
    """Exchange blocks ``a`` and ``b`` in the block list; the caller holds ``lm.lock``.

    Per-layer attention types (Gemma-3 ``config.layer_types``) move with their blocks.
    """
    blocks = block_stack(lm)
    owner = _layer_types_owner(lm)
    old_types = list(owner.layer_types) if owner is not None else None
    blocks[a], blocks[b] = blocks[b], blocks[a]
    if owner is not None:
        types = list(old_types)
        types[a], types[b] = types[b], types[a]
        owner.layer_types = types
    try:
        yield
    finally:
        blocks[a], blocks[b] = blocks[b], blocks[a]
        if owner is not None:
            owner.layer_types = old_types


@torch.inference_mode()
def forward(
    lm: LoadedModel,
    ids: torch.Tensor,
    fwd_hooks: Sequence[FwdHook] = (),
    pre_hooks: Sequence[PreHook] = (),
    names: Iterable[str] | None = None,
    swap: tuple[int, int] | None = None,
    **kwargs: Any,
) -> Any:
    """One locked forward pass of the bridge with hooks on.

    Args:
        lm: Loaded model.
        ids: ``(B, T)`` token ids.
        fwd_hooks: Bridge hooks ``(name, fn)``.
        pre_hooks: Torch forward pre-hooks ``(module, fn)`` (with keyword arguments).
        names: Hook points to cache: then returns ``(logits, {name: tensor})``.
        swap: Two blocks that exchange places for this pass.
        **kwargs: Passed to the bridge (``logits_to_keep``, ``past_key_values``, ...).

    Returns:
        The logits, or ``(logits, cache)`` when ``names`` is given.
    """
    perm = _permuted(lm, *swap) if swap else contextlib.nullcontext()
    with lm.lock, _hooked(lm, fwd_hooks, pre_hooks), perm:
        if names is not None:
            wanted = set(names)
            logits, act = lm.bridge.run_with_cache(
                ids, names_filter=lambda n: n in wanted, **kwargs
            )
            return logits, {n: act[n] for n in wanted}
        return lm.bridge(ids, **kwargs)


@torch.inference_mode()
def run_rows(
    lm: LoadedModel,
    ids: torch.Tensor,
    n_rows: int,
    fwd_hooks: Sequence[FwdHook] = (),
    pre_hooks: Sequence[PreHook] = (),
    reuse_prefix: bool = True,
    logits_to_keep: int = 1,
) -> torch.Tensor:
    """Logits of ``n_rows`` copies of one prompt ``ids`` ``(1, T)``, each with its own hooks.

    With ``reuse_prefix`` (and ``logits_to_keep == 1``, ``T > 1``), the clean prefix
    ``ids[:, :-1]`` runs once into a key/value cache that every row shares, and only the last
    token is computed per row: ``T - 1 + B`` token-forwards instead of ``B * T``, the same numbers
    to float rounding. Valid only when the hooks change nothing before the last position. Hooked
    tensors then hold only the last position, so hooks count positions from the end.

    Returns:
        ``(n_rows, logits_to_keep, V)`` logits (the model's dtype).
    """
    batch = ids.expand(n_rows, -1)  # (B, T)
    with lm.lock:
        kwargs: dict[str, Any] = {"logits_to_keep": logits_to_keep}
        if reuse_prefix and logits_to_keep == 1 and ids.shape[1] > 1:
            _, past = lm.bridge(ids[:, :-1], return_type="logits_and_cache", logits_to_keep=1)
            past.batch_repeat_interleave(n_rows)
            batch, kwargs["past_key_values"] = batch[:, -1:], past
        with _hooked(lm, fwd_hooks, pre_hooks):
            return lm.bridge(batch, **kwargs)


def top_token(lm: LoadedModel, ids: torch.Tensor) -> tuple[int, float]:
    """The model's top next token after ``ids`` ``(1, T)`` and its probability (one step)."""
    logp = torch.log_softmax(run_rows(lm, ids, 1)[0, 0].float(), -1)  # (V,)
    target = int(logp.argmax())
    return target, float(logp[target].exp())


#: Prompts up to this many tokens run their forward pass on one thread (faster on a busy CPU).
SHORT_PROMPT = 256


@torch.inference_mode()
def states_and_logits(
    lm: LoadedModel, ids: torch.Tensor, logits: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``residual_states`` in one plain forward pass: ``(L+1, T, D)`` states, ``(T, V)`` logits.

    ``logits=False`` runs the model without its unembedding and returns ``None`` for the logits
    (``lenses.readout.lens_from_states`` then computes them from ``h_L`` once, for both uses).

    The Hugging Face model runs with hooks on its blocks only (a block's input is ``h_i``, the
    last block's output ``h_L``), not through the bridge's cache of every hook point; the
    numbers are the bridge's (the bridge runs the same modules). Falls back to
    :func:`residual_states` for a model whose blocks are not all called once.
    """
    try:
        blocks = block_stack(lm)
    except ValueError:
        return residual_states(lm, ids)
    states: list[torch.Tensor | None] = [None] * (len(blocks) + 1)

    def pre(j: int):
        def hook(_mod, args, kwargs):
            states[j] = (args[0] if args else kwargs["hidden_states"])[0]

        return hook

    def post(_mod, _args, out):
        states[-1] = (out[0] if isinstance(out, tuple) else out)[0]

    model = lm.bridge.original_model
    if not logits:  # the decoder without its unembedding
        model = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
    threads = 1 if ids.shape[-1] <= SHORT_PROMPT else torch.get_num_threads()
    with lm.lock, intra_op_threads(threads):
        handles = [
            b.register_forward_pre_hook(pre(j), with_kwargs=True) for j, b in enumerate(blocks)
        ]
        handles.append(blocks[-1].register_forward_hook(post))
        try:
            out = model(ids, use_cache=False)
        finally:
            for h in handles:
                h.remove()
    if any(s is None for s in states):
        return residual_states(lm, ids)
    stacked = torch.stack(states).float()  # type: ignore[arg-type]
    if not logits and model is not lm.bridge.original_model:
        return stacked, None
    z = out.logits if hasattr(out, "logits") else out[0]
    if z.shape[-1] != unembed_weights(lm)[0].shape[0]:
        return residual_states(lm, ids)
    return stacked, z[0].float()
