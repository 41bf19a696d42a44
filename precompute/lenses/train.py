"""Training a tuned lens (METHODS.md A4; Belrose et al. 2023): resumable, from frozen states.

Each translator is trained, with the model frozen, to minimise ``KL(p_final || lens_i)`` at the
same position (token shift 0) with SGD and Nesterov momentum (TL defaults: beta 0.9, lr 1.0 *
(1 - beta), weight decay 1e-3, linear decay, global gradient clipping at 1.0).

Efficiency: the residual states of a batch are computed once (no grad) and every translator trains
from them. The cost is the unembedding of every layer's translated state, forward and backward, so
:class:`_UnembedKL` computes the KL and its gradient ``(q - p) / N`` in one logits buffer, in place:
two ``N x D x V`` matrix products per layer and a few passes over the logits, nothing else.

Checkpoints are one safetensors file (translators and momentum buffers; the rest as JSON in its
metadata), replaced atomically after each step: no pickle is ever read back.

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> from precompute.types import Item
    >>> lens, summary = train_lens(lm, [Item("a", "the cat sat on the mat " * 4)],
    ...                            TrainConfig(num_steps=1, tokens_per_step=8))
    >>> summary["steps_done"]
    1
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from precompute.lenses.tuned import TunedLens, check_identity, model_identity
from precompute.model.internals import final_norm, logit_softcap, residual_states, unembed_weights
from precompute.model.load import LoadedModel
from precompute.model.replay import block_stack
from precompute.types import BaseConfig, Item, option

log = logging.getLogger(__name__)

#: The TL paper/code budget (METHODS.md A4): 250 steps x 2^18 tokens, sequences of 2048.
PAPER_BUDGET = dict(num_steps=250, tokens_per_step=2**18, max_seq_len=2048, micro_tokens=2048)


@dataclass(frozen=True)
class TrainConfig(BaseConfig):
    """Training settings.

    Optimiser defaults are TL's (METHODS.md A4): ``momentum`` 0.9, ``lr_scale`` 1.0 (torch lr =
    lr_scale * (1 - momentum)), ``weight_decay`` 1e-3, ``clip`` 1.0, linear decay, ``seed`` 42.
    ``budget="cpu"`` (ours) is sized for a shared 2-core CPU: ``num_steps`` x ``tokens_per_step``
    tokens of WikiText-2 paragraphs cut to ``max_seq_len``; ``budget="paper"`` replaces those with
    TL's 250 x 2^18 tokens of 2048 (a GPU job). ``skip_first`` (ours) drops position 0 from the
    loss (METHODS.md 0.5). ``init``: ``"zero"`` (TL) or ``"ridge"`` (ours; ``fit_tokens``,
    ``val_tokens``, ``ridge_grid``: :mod:`precompute.lenses.ridge`).
    """

    budget: str = "cpu"
    num_steps: int = option(8, lo=0)
    tokens_per_step: int = 96
    max_seq_len: int = 64
    micro_tokens: int = 128
    momentum: float = 0.9
    lr_scale: float = 1.0
    weight_decay: float = 1e-3
    clip: float = 1.0
    seed: int = 42
    skip_first: bool = True
    ckpt_every: int = 1
    init: str = "zero"
    fit_tokens: int = 8192
    val_tokens: int = 128
    ridge_grid: str = "1e-4,1e-3,1e-2,1e-1,1"

    def resolved(self) -> TrainConfig:
        """Return the config with the budget applied (``paper`` sets TL's step and token counts)."""
        if self.budget == "paper":
            return replace(self, **PAPER_BUDGET)
        if self.init not in ("zero", "ridge"):
            raise ValueError(f"Unknown init {self.init!r}; use 'zero' (TL) or 'ridge' (ours).")
        if self.budget != "cpu":
            raise ValueError(f"Unknown budget {self.budget!r}; use 'cpu' (ours) or 'paper' (TL).")
        return self

    @property
    def lr(self) -> float:
        """Torch learning rate: ``lr_scale * (1 - momentum)`` (undoes torch's momentum scaling)."""
        return self.lr_scale * (1.0 - self.momentum)


class _UnembedKL(torch.autograd.Function):
    """Mean over rows of ``KL(p || softmax(x W^T + c))``, gradient ``(q - p) / N`` in place.

    One ``(N, V)`` buffer holds the logits, then ``q``, then the gradient; nothing else of that
    size is allocated besides ``p`` (shared by every layer).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, p, neg_ent_p, cap):  # noqa: D102
        z = x @ weight.t()  # (N, V)
        if bias is not None:
            z += bias
        th = None
        if cap:
            th = torch.tanh(z.div_(cap))  # (N, V)
            z = torch.mul(th, cap, out=z)
        lse = torch.logsumexp(z, -1)  # (N,)
        pz = torch.linalg.vecdot(p, z)  # (N,)
        kl = lse - pz + neg_ent_p  # (N,)  KL = sum p log p - sum p z + lse
        g = z.sub_(lse[:, None]).exp_().sub_(p)  # (N, V)  q - p
        if th is not None:
            g.mul_(th.pow_(2).neg_().add_(1.0))  # d softcap: 1 - tanh^2
        ctx.save_for_backward(g, weight)
        ctx.n = x.shape[0]
        return kl.sum()

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        g, weight = ctx.saved_tensors
        grad_x = (g @ weight) * grad_out  # (N, D)
        return grad_x, None, None, None, None, None


def unembed_kl_sum(
    lm: LoadedModel, x: torch.Tensor, p: torch.Tensor, neg_ent_p: torch.Tensor
) -> torch.Tensor:
    """Sum over rows of KL(p || lens) for normed states ``x`` ``(N, D)`` (differentiable in x)."""
    w, b = unembed_weights(lm)
    return _UnembedKL.apply(
        x, w.detach(), None if b is None else b.detach(), p, neg_ent_p, logit_softcap(lm)
    )


@contextlib.contextmanager
def frozen(lm: LoadedModel):
    """Model parameters do not require grad inside the block (restored afterwards)."""
    params = list(lm.bridge.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def batch_states(lm: LoadedModel, docs: list[torch.Tensor], skip_first: bool = True):
    """One frozen forward pass per document; states of ``h_0..h_{L-1}`` and targets, concatenated.

    Returns:
        ``states`` ``(L, N, D)``, ``final_logits`` ``(N, V)``, ``next_ids`` ``(N,)`` (-1 where the
        next token is unknown), with ``N`` the positions kept. Plain tensors (usable by autograd).
    """
    s_all, z_all, n_all = [], [], []
    start = 1 if skip_first else 0
    for ids in docs:
        ids = ids.view(1, -1).to(lm.device)  # (1, T)
        states, logits = residual_states(lm, ids)  # (L+1, T, D), (T, V)
        s_all.append(states[:-1, start:].clone())  # (L, T', D)
        z_all.append(logits[start:].clone())  # (T', V)
        nxt = torch.cat([ids[0, start + 1 :], ids.new_full((1,), -1)])
        n_all.append(nxt[: z_all[-1].shape[0]])
    return torch.cat(s_all, 1), torch.cat(z_all), torch.cat(n_all)


class Trainer:
    """Trains every translator of one model from shared frozen states; checkpoints and resumes.

    Args:
        lm: The (frozen) model.
        docs: Training token sequences ``(T,)``, each at most ``max_seq_len`` tokens.
        cfg: The resolved config (any :class:`TrainConfig`; its hash names the checkpoint's run).
        ckpt: Checkpoint file (``None``: no checkpoints).
        init: Starting translators (``None``: zero, the logit lens).
    """

    def __init__(
        self,
        lm: LoadedModel,
        docs: list[torch.Tensor],
        cfg: TrainConfig,
        ckpt: Path | None = None,
        init: TunedLens | None = None,
    ):
        if not docs:
            raise ValueError("No training text: the tuned lens needs at least one document.")
        self.lm, self.docs, self.cfg, self.ckpt = lm, docs, cfg, ckpt
        d, n = lm.d_model, lm.n_layers
        A0 = init.A if init is not None else torch.zeros(n, d, d)
        b0 = init.b if init is not None else torch.zeros(n, d)
        self.A = [A0[i].detach().clone().float().requires_grad_(True) for i in range(n)]
        self.b = [b0[i].detach().clone().float().requires_grad_(True) for i in range(n)]
        self.params = [*self.A, *self.b]
        self.opt = torch.optim.SGD(
            self.params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
        steps = cfg.num_steps
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0 - s / max(steps, 1))
        self.step = 0
        self.log: list[dict] = []
        self.tokens_seen = 0
        self.seconds = 0.0
        self.schedule = self._schedule()

    def _schedule(self) -> list[list[int]]:
        """Document indices of every step: a seeded shuffle, cycled; fixed so resuming is exact."""
        order = list(range(len(self.docs)))
        random.Random(self.cfg.seed).shuffle(order)
        out, cursor = [], 0
        skip = 1 if self.cfg.skip_first else 0
        for _ in range(self.cfg.num_steps):
            step, tokens = [], 0
            while tokens < self.cfg.tokens_per_step:
                i = order[cursor % len(order)]
                cursor += 1
                step.append(i)
                tokens += max(len(self.docs[i]) - skip, 0)
                if cursor > len(order) * (self.cfg.tokens_per_step + 1):
                    raise ValueError("Training documents are too short to fill a step.")
            out.append(step)
        return out

    def lens(self) -> TunedLens:
        """Return the current translators as a :class:`TunedLens`."""
        return TunedLens(
            torch.stack([a.detach() for a in self.A]).clone(),
            torch.stack([b.detach() for b in self.b]).clone(),
            model_identity(self.lm),
        )

    def train_step(self) -> list[float]:
        """One optimiser step over ``tokens_per_step`` tokens; returns mean KL per layer (nats)."""
        cfg, lm = self.cfg, self.lm
        docs = [self.docs[i] for i in self.schedule[self.step]]
        states, final_logits, _ = batch_states(lm, docs, cfg.skip_first)  # (L, N, D), (N, V)
        n_tok = states.shape[1]
        kl_sum = [0.0] * lm.n_layers
        self.opt.zero_grad(set_to_none=True)
        with frozen(lm):
            for r0 in range(0, n_tok, cfg.micro_tokens):
                logp = torch.log_softmax(final_logits[r0 : r0 + cfg.micro_tokens], -1)  # (n, V)
                p = logp.exp()  # (n, V)
                neg_ent = torch.linalg.vecdot(p, logp.nan_to_num_(0.0, 0.0, 0.0))  # (n,)
                del logp
                for i in range(lm.n_layers):
                    h = states[i, r0 : r0 + cfg.micro_tokens]  # (n, D)
                    t = h + F.linear(h, self.A[i], self.b[i])  # (n, D)
                    loss = unembed_kl_sum(lm, final_norm(lm, t), p, neg_ent)
                    (loss / n_tok).backward()
                    kl_sum[i] += loss.detach().item()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        self.tokens_seen += n_tok
        return [k / n_tok for k in kl_sum]

    def train(self, stop_after: int | None = None) -> TunedLens:
        """Run (or resume) training to ``num_steps``; ``stop_after`` steps simulates a kill."""
        self.resume()
        done = 0
        while self.step < self.cfg.num_steps:
            if stop_after is not None and done >= stop_after:
                break
            t0 = time.perf_counter()
            kl = self.train_step()
            self.seconds += time.perf_counter() - t0
            self.log.append({"step": self.step, "mean_kl": sum(kl) / len(kl), "kl": kl})
            done += 1
            mean_kl = self.log[-1]["mean_kl"]
            log.info("tuned lens step %d/%d: train KL %.3f", self.step, self.cfg.num_steps, mean_kl)
            if self.ckpt is not None and (
                self.step % self.cfg.ckpt_every == 0 or self.step == self.cfg.num_steps
            ):
                self.save_checkpoint()
        return self.lens()

    def save_checkpoint(self) -> None:
        """Everything needed to continue, in one safetensors file written atomically."""
        from safetensors.torch import save_file

        opt = self.opt.state_dict()
        tensors = {f"A.{i}": a.detach().contiguous() for i, a in enumerate(self.A)}
        tensors |= {f"b.{i}": b.detach().contiguous() for i, b in enumerate(self.b)}
        for i, st in opt["state"].items():
            if st.get("momentum_buffer") is not None:
                tensors[f"momentum.{i}"] = st["momentum_buffer"].contiguous()
        state = dict(
            step=self.step,
            param_groups=opt["param_groups"],
            sched=self.sched.state_dict(),
            log=self.log,
            tokens_seen=self.tokens_seen,
            seconds=self.seconds,
            config_hash=self.cfg.config_hash(),
            identity=model_identity(self.lm),
        )
        self.ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt.with_name(f".{self.ckpt.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
        os.replace(tmp, self.ckpt)

    def resume(self) -> None:
        """Load the checkpoint if one exists for this config and model."""
        if self.ckpt is None or not self.ckpt.exists() or self.step > 0:
            return
        from safetensors import safe_open

        with safe_open(str(self.ckpt), framework="pt") as f:
            state = json.loads((f.metadata() or {}).get("state", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if state.get("config_hash") != self.cfg.config_hash():
            log.warning("Ignoring checkpoint %s: made with another config", self.ckpt)
            return
        check_identity(state["identity"], self.lm)
        n = len(self.A)
        with torch.no_grad():
            for i in range(n):
                self.A[i].copy_(tensors[f"A.{i}"])
                self.b[i].copy_(tensors[f"b.{i}"])
        momentum = {
            i: {"momentum_buffer": tensors[f"momentum.{i}"]}
            for i in range(2 * n)
            if f"momentum.{i}" in tensors
        }
        self.opt.load_state_dict({"state": momentum, "param_groups": state["param_groups"]})
        self.sched.load_state_dict(state["sched"])
        self.step, self.log = state["step"], state["log"]
        self.tokens_seen, self.seconds = state["tokens_seen"], state["seconds"]
        log.info("Resumed tuned lens training at step %d", self.step)


def tokenize_docs(lm: LoadedModel, items: list[Item], max_tokens: int) -> list[torch.Tensor]:
    """Each item tokenised as the model does by default, cut to ``max_tokens`` (>= 2 tokens)."""
    docs = [lm.tokenize(it.text, max_tokens=max_tokens)[0].cpu() for it in items]
    return [d for d in docs if d.numel() >= 2]


def train_lens(
    lm: LoadedModel,
    items: list[Item],
    cfg: TrainConfig,
    ckpt: Path | None = None,
    stop_after: int | None = None,
) -> tuple[TunedLens, dict]:
    """Train (or resume) a lens on ``items``; returns it and a summary of the run."""
    cfg = cfg.resolved()
    docs = tokenize_docs(lm, items, cfg.max_seq_len)
    from precompute.lenses.ridge import keep_better, start_lens

    init, init_info, train_docs, val_docs = start_lens(lm, docs, cfg, ckpt)
    trainer = Trainer(lm, train_docs, cfg, ckpt, init)
    lens = trainer.train(stop_after=stop_after) if cfg.num_steps > 0 else trainer.lens()
    chosen = None  # per layer, SGD's result or its ridge start by validation KL
    if init is not None and cfg.num_steps > 0:
        lens, chosen = keep_better(lm, init, lens, val_docs, cfg.skip_first)
    summary = dict(
        init=init_info,
        sgd_vs_start=chosen,
        budget=cfg.budget,
        budget_note="TL's 250 steps x 2^18 tokens" if cfg.budget == "paper" else "CPU (ours)",
        steps_done=trainer.step,
        tokens_seen=trainer.tokens_seen,
        train_seconds=round(trainer.seconds, 2),
        train_docs=len(train_docs),
        train_kl_first=trainer.log[0]["kl"] if trainer.log else None,
        train_kl_last=trainer.log[-1]["kl"] if trainer.log else None,
        config=cfg.to_dict(),
    )
    lens.meta["training"] = summary
    return lens, summary


def training_flops(lm: LoadedModel, n_forward: int, n_loss: int, mean_len: float) -> dict:
    """FLOPs training cannot avoid (multiply-add = 2).

    * frozen forward: ``2 x`` block matrix parameters + the model's unembedding ``2 D V`` per token,
      plus causal attention ``2 T D`` per block (scores and mixing, half the square);
    * translators: ``2 D^2`` forward + ``2 D^2`` weight gradient per layer and token;
    * unembedding of every layer: ``2 D V`` forward + ``2 D V`` backward, and ``~6 V`` for softmax,
      KL and its gradient, per layer and token.
    """
    d, v, n = lm.d_model, lm.d_vocab, lm.n_layers
    block = sum(p.numel() for p in block_stack(lm).parameters() if p.dim() == 2)
    fwd = n_forward * (2 * block + 2 * d * v + 2 * n * mean_len * d)
    trans = n_loss * n * 4 * d * d
    unemb = n_loss * n * (4 * d * v + 6 * v)
    return dict(forward=fwd, translators=trans, unembedding=unemb, total=fwd + trans + unemb)
