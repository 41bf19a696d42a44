"""Tuned lens (METHODS.md A4; Belrose et al. 2023): one learned affine translator per layer.

For residual state ``h_i`` (``i = 0..L-1``) the lens reads ``U(norm_f(h + A_i h + b_i))``; the final
state ``h_L`` needs no translator. ``A_i`` and ``b_i`` start at zero (the residual form of the TL
code), so an untrained tuned lens *is* the logit lens, exactly. Each translator is trained, with
the model frozen, to minimise ``KL(p_final || lens_i)`` at the same position (token shift 0) with
SGD and Nesterov momentum (TL defaults: beta 0.9, lr 1.0 * (1 - beta), weight decay 1e-3, linear
decay, global gradient clipping at 1.0).

Efficiency: the residual states of a batch are computed once (no grad) and every translator trains
from them. The cost is the unembedding of every layer's translated state, forward and backward, so
:class:`_UnembedKL` computes the KL and its gradient ``(q - p) / N`` in one logits buffer, in place:
two ``N x D x V`` matrix products per layer and a few passes over the logits, nothing else.

Artifacts: ``lens_dir/<model>/tuned_lens.safetensors`` + ``tuned_lens.json`` (model, ``d_model``,
``n_layers``, vocabulary size, tokenizer and unembedding hashes, training budget). Translators are
stored in float16, low rank (truncated SVD, ``save_rank``) to keep the published folder small; the
evaluation uses the stored lens, so published numbers describe the shipped artifact. A lens whose
hashes do not match the model is refused (:class:`LensMismatchError`).

Example:
    >>> from precompute.model.load import load_model
    >>> lm = load_model("tiny-gpt2")
    >>> lens = TunedLens.zeros(lm)
    >>> ids = lm.tokenize("the cat sat on the mat")
    >>> r = tuned_readout(lm, lens, ids)
    >>> float(r.kl[-1].abs().max()) < 1e-5
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from precompute.bench.util import matmul_peak_flops
from precompute.methods import Method
from precompute.methods.logit_lens import LensReadout, doc_records, lens_from_states
from precompute.model.internals import final_norm, residual_states
from precompute.model.load import LoadedModel
from precompute.types import BaseConfig, Item, RunContext

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LENS_DIR = ROOT / "data" / "results" / "lenses"
DEFAULT_CKPT_DIR = ROOT / ".stagescope" / "work" / "tuned_lens"
LENS_FILE = "tuned_lens.safetensors"
CONFIG_FILE = "tuned_lens.json"
FORMAT = "stagescope-tuned-lens-v1"

#: The TL paper/code budget (METHODS.md A4): 250 steps x 2^18 tokens, sequences of 2048.
PAPER_BUDGET = dict(num_steps=250, tokens_per_step=2**18, max_seq_len=2048, micro_tokens=2048)

EVAL_METRICS = ("kl_to_final", "ce_next_token", "entropy", "ce_to_final", "top1_matches_final")


class LensMismatchError(ValueError):
    """A saved lens does not belong to this model (architecture, tokenizer or unembedding)."""


@dataclass(frozen=True)
class TunedLensConfig(BaseConfig):
    """Training and evaluation settings.

    Optimiser defaults are TL's (METHODS.md A4): ``momentum`` 0.9, ``lr_scale`` 1.0 (torch lr =
    lr_scale * (1 - momentum)), ``weight_decay`` 1e-3, ``clip`` 1.0, linear decay, ``seed`` 42.
    ``budget="cpu"`` (ours) is sized for a shared 2-core CPU: ``num_steps`` x ``tokens_per_step``
    tokens of WikiText-2 paragraphs cut to ``max_seq_len``; ``budget="paper"`` replaces those with
    TL's 250 x 2^18 tokens of 2048 (a GPU job). ``n_train_docs`` / ``n_eval_docs`` split the items
    (eval paragraphs are never trained on); ``eval_max_tokens``, ``save_rank`` and
    ``skip_first`` (position 0 excluded from loss and means, METHODS.md 0.5) are ours.
    """

    budget: str = "cpu"
    num_steps: int = 8
    tokens_per_step: int = 96
    max_seq_len: int = 64
    micro_tokens: int = 128
    momentum: float = 0.9
    lr_scale: float = 1.0
    weight_decay: float = 1e-3
    clip: float = 1.0
    seed: int = 42
    skip_first: bool = True
    n_train_docs: int = 200
    n_eval_docs: int = 8
    eval_max_tokens: int = 48
    save_rank: int = 48
    save_dtype: str = "float16"
    ckpt_every: int = 1
    lens_dir: str = ""
    ckpt_dir: str = ""
    n_docs: int = 208

    def resolved(self) -> TunedLensConfig:
        """Return the config with the budget applied (``paper`` sets TL's step and token counts)."""
        if self.budget == "paper":
            return replace(self, **PAPER_BUDGET)
        if self.budget != "cpu":
            raise ValueError(f"Unknown budget {self.budget!r}; use 'cpu' (ours) or 'paper' (TL).")
        return self

    @property
    def lr(self) -> float:
        """Torch learning rate: ``lr_scale * (1 - momentum)`` (undoes torch's momentum scaling)."""
        return self.lr_scale * (1.0 - self.momentum)


# ----------------------------------------------------------------------------------------------
# Identity of a model: the lens refuses models it was not trained for.


_HASH_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # bridge -> identity


def model_identity(lm: LoadedModel) -> dict:
    """Name, shapes, and short hashes of the tokenizer vocabulary and the unembedding."""
    key = lm.bridge
    if key not in _HASH_CACHE:
        vocab = sorted(lm.tokenizer.get_vocab().items())
        tok_hash = hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]
        w, b = _unembed_weights(lm)
        h = hashlib.sha256(w.detach().float().contiguous().cpu().numpy().tobytes())
        if b is not None:
            h.update(b.detach().float().cpu().numpy().tobytes())
        _HASH_CACHE[key] = dict(
            model=lm.name,
            d_model=lm.d_model,
            n_layers=lm.n_layers,
            d_vocab=int(w.shape[0]),
            tokenizer_hash=tok_hash,
            unembed_hash=h.hexdigest()[:16],
        )
    return dict(_HASH_CACHE[key])


def _unembed_weights(lm: LoadedModel) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return the unembedding as HF stores it: weight ``(V, D)`` and optional bias ``(V,)``."""
    mod = getattr(lm.bridge.unembed, "original_component", lm.bridge.unembed)
    return mod.weight, getattr(mod, "bias", None)


def _softcap(lm: LoadedModel) -> float | None:
    cfg = getattr(getattr(lm.bridge, "original_model", None), "config", None)
    return getattr(cfg, "final_logit_softcapping", None) or None


def check_identity(saved: dict, lm: LoadedModel) -> None:
    """Refuse a lens trained for another model, tokenizer or unembedding.

    Raises:
        LensMismatchError: With what differs and how to get a matching lens.
    """
    ours = model_identity(lm)
    diffs = [
        f"{k}: lens has {saved.get(k)!r}, model has {ours[k]!r}"
        for k in ("d_model", "n_layers", "d_vocab", "tokenizer_hash", "unembed_hash")
        if saved.get(k) != ours[k]
    ]
    if diffs:
        raise LensMismatchError(
            f"This tuned lens was trained for model {saved.get('model')!r}, not for "
            f"{lm.name!r} ({'; '.join(diffs)}). A lens only reads the model, tokenizer and "
            f"unembedding it was trained on: train one with `python -m precompute run --model "
            f"{lm.name} --methods tuned_lens`."
        )


# ----------------------------------------------------------------------------------------------
# The lens.


@dataclass
class TunedLens:
    """Translators ``A`` ``(L, D, D)`` (``nn.Linear`` layout: ``y = h A^T``) and ``b`` ``(L, D)``.

    Attributes:
        A: One matrix per residual state ``h_0..h_{L-1}``.
        b: One bias per state.
        meta: Identity of the model it belongs to, and how it was trained and stored.
    """

    A: torch.Tensor
    b: torch.Tensor
    meta: dict = field(default_factory=dict)

    @classmethod
    def zeros(cls, lm: LoadedModel) -> TunedLens:
        """Return the untrained lens (equal to the logit lens)."""
        d, n = lm.d_model, lm.n_layers
        return cls(torch.zeros(n, d, d), torch.zeros(n, d), model_identity(lm))

    def translate(self, states: torch.Tensor) -> torch.Tensor:
        """Apply translator ``i`` to state ``i``; a final state ``h_L`` (if given) passes through.

        Args:
            states: ``(S, T, D)`` with ``S = L`` or ``L + 1``.

        Returns:
            Translated states, same shape.
        """
        n = self.A.shape[0]
        if states.shape[0] not in (n, n + 1):
            raise ValueError(f"Expected {n} or {n + 1} residual states, got {states.shape[0]}.")
        A = self.A.to(states.dtype)
        b = self.b.to(states.dtype)
        h = states[:n]  # (L, T, D)
        out = h + torch.baddbmm(b[:, None, :], h, A.transpose(1, 2))  # (L, T, D)
        if states.shape[0] == n + 1:
            out = torch.cat([out, states[n:]])
        return out

    # -- storage ------------------------------------------------------------------------------

    def save(self, folder: Path, rank: int = 0, dtype: str = "float16") -> dict:
        """Write the lens atomically; ``rank > 0`` stores each ``A_i`` as a rank-``r`` SVD.

        Returns:
            The written JSON config.
        """
        from safetensors.torch import save_file

        tdt = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
        if dtype not in tdt:
            raise ValueError(f"save dtype {dtype!r}: use one of {sorted(tdt)}")
        n, d, _ = self.A.shape
        tensors: dict[str, torch.Tensor] = {"b": self.b.to(tdt[dtype]).contiguous()}
        kept = []
        if 0 < rank < d:
            u, s, vh = torch.linalg.svd(self.A.double())  # (L, D, D), (L, D), (L, D, D)
            tensors["A_left"] = (u[:, :, :rank] * s[:, None, :rank]).to(tdt[dtype]).contiguous()
            tensors["A_right"] = vh[:, :rank, :].to(tdt[dtype]).contiguous()
            total = s.pow(2).sum(-1).clamp_min(1e-30)
            kept = (s[:, :rank].pow(2).sum(-1) / total).tolist()
        else:
            tensors["A"] = self.A.to(tdt[dtype]).contiguous()
            rank = d
        meta = dict(
            self.meta,
            format=FORMAT,
            rank=rank,
            dtype=dtype,
            energy_kept_per_layer=[round(k, 6) for k in kept] or None,
        )
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file(tensors, str(tmp / LENS_FILE), metadata={"format": FORMAT})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        for f in (tmp / LENS_FILE, tmp / CONFIG_FILE):
            f.chmod(0o644)  # readable by the app's user (e.g. uid 1000 in the Docker Space)
        tmp.chmod(0o755)
        if folder.exists():
            trash = folder.with_name(f".{folder.name}.{os.getpid()}.old")
            os.replace(folder, trash)
            os.replace(tmp, folder)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, folder)
        return meta

    @classmethod
    def load(cls, folder: Path, lm: LoadedModel | None = None) -> TunedLens:
        """Read a saved lens; with ``lm``, refuse it unless it was trained for that model.

        Raises:
            FileNotFoundError: No lens in ``folder``.
            LensMismatchError: The lens belongs to another model or tokenizer.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG_FILE).exists() or not (folder / LENS_FILE).exists():
            raise FileNotFoundError(f"No tuned lens in {folder} (expected {CONFIG_FILE}).")
        meta = json.loads((folder / CONFIG_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise LensMismatchError(f"{folder} holds format {meta.get('format')!r}, not {FORMAT}.")
        if lm is not None:
            check_identity(meta, lm)
        t = load_file(str(folder / LENS_FILE))
        A = (  # (L, D, D)
            t["A"].float() if "A" in t else torch.bmm(t["A_left"].float(), t["A_right"].float())
        )
        return cls(A, t["b"].float(), meta)


def lens_folder(lm_name: str, lens_dir: str | Path | None = None) -> Path:
    """Where the lens of a model lives (``data/results/lenses/<model>`` by default)."""
    root = Path(lens_dir) if lens_dir else DEFAULT_LENS_DIR
    return root / lm_name.replace("/", "__")


def find_lens(lm: LoadedModel, lens_dir: str | Path | None = None) -> TunedLens | None:
    """Return the saved lens for ``lm``, or ``None`` if there is none (a mismatch raises)."""
    folder = lens_folder(lm.name, lens_dir)
    if not (folder / CONFIG_FILE).exists():
        return None
    return TunedLens.load(folder, lm)


def tuned_readout(lm: LoadedModel, lens: TunedLens, ids: torch.Tensor, k: int = 10) -> LensReadout:
    """Tuned-lens read-outs of one prompt ``(1, T)``, same fields as the logit lens."""
    states, logits = residual_states(lm, ids)  # (L+1, T, D), (T, V)
    return lens_from_states(lm, lens.translate(states), logits, ids[0], k=k)


# ----------------------------------------------------------------------------------------------
# Training.


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
    w, b = _unembed_weights(lm)
    return _UnembedKL.apply(
        x, w.detach(), None if b is None else b.detach(), p, neg_ent_p, _softcap(lm)
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


@torch.no_grad()
def batch_states(lm: LoadedModel, docs: list[torch.Tensor], skip_first: bool = True):
    """One frozen forward pass per document; states of ``h_0..h_{L-1}`` and targets, concatenated.

    Returns:
        ``states`` ``(L, N, D)``, ``final_logits`` ``(N, V)``, ``next_ids`` ``(N,)`` (-1 where the
        next token is unknown), with ``N`` the positions kept.
    """
    names = [f"blocks.{i}.hook_resid_pre" for i in range(lm.n_layers)]
    wanted = set(names)
    s_all, z_all, n_all = [], [], []
    start = 1 if skip_first else 0
    for ids in docs:
        ids = ids.view(1, -1).to(lm.device)  # (1, T)
        with lm.lock:
            logits, cache = lm.bridge.run_with_cache(ids, names_filter=lambda n: n in wanted)
        s_all.append(torch.stack([cache[n][0, start:] for n in names]).float())  # (L, T', D)
        z_all.append(logits[0, start:].float())  # (T', V)
        nxt = torch.cat([ids[0, start + 1 :], ids.new_full((1,), -1)])
        n_all.append(nxt[: z_all[-1].shape[0]])
    return torch.cat(s_all, 1), torch.cat(z_all), torch.cat(n_all)


class Trainer:
    """Trains every translator of one model from shared frozen states; checkpoints and resumes.

    Args:
        lm: The (frozen) model.
        docs: Training token sequences ``(T,)``, each at most ``max_seq_len`` tokens.
        cfg: The resolved config.
        ckpt: Checkpoint file (``None``: no checkpoints).
    """

    def __init__(
        self,
        lm: LoadedModel,
        docs: list[torch.Tensor],
        cfg: TunedLensConfig,
        ckpt: Path | None = None,
    ):
        if not docs:
            raise ValueError("No training text: the tuned lens needs at least one document.")
        self.lm, self.docs, self.cfg, self.ckpt = lm, docs, cfg, ckpt
        d, n = lm.d_model, lm.n_layers
        self.A = [torch.zeros(d, d, requires_grad=True) for _ in range(n)]
        self.b = [torch.zeros(d, requires_grad=True) for _ in range(n)]
        self.params = [*self.A, *self.b]
        self.opt = torch.optim.SGD(
            self.params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=True,
            weight_decay=cfg.weight_decay,
        )
        steps = cfg.num_steps
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0 - s / steps)
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
                    x = final_norm(lm, t)  # (n, D)
                    loss = unembed_kl_sum(lm, x, p, neg_ent)
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
            log.info(
                "tuned lens step %d/%d: mean train KL %.3f nats",
                self.step,
                self.cfg.num_steps,
                self.log[-1]["mean_kl"],
            )
            if self.ckpt is not None and (
                self.step % self.cfg.ckpt_every == 0 or self.step == self.cfg.num_steps
            ):
                self.save_checkpoint()
        return self.lens()

    def save_checkpoint(self) -> None:
        """Everything needed to continue, written atomically."""
        self.ckpt.parent.mkdir(parents=True, exist_ok=True)
        state = dict(
            step=self.step,
            A=[a.detach() for a in self.A],
            b=[b.detach() for b in self.b],
            opt=self.opt.state_dict(),
            sched=self.sched.state_dict(),
            log=self.log,
            tokens_seen=self.tokens_seen,
            seconds=self.seconds,
            config_hash=self.cfg.config_hash(),
            identity=model_identity(self.lm),
        )
        tmp = self.ckpt.with_name(f".{self.ckpt.name}.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt)

    def resume(self) -> None:
        """Load the checkpoint if one exists for this config and model."""
        if self.ckpt is None or not self.ckpt.exists() or self.step > 0:
            return
        state = torch.load(self.ckpt, weights_only=False)
        if state.get("config_hash") != self.cfg.config_hash():
            log.warning("Ignoring checkpoint %s: made with another config", self.ckpt)
            return
        check_identity(state["identity"], self.lm)
        with torch.no_grad():
            for p, v in zip(self.A + self.b, state["A"] + state["b"]):
                p.copy_(v)
        self.opt.load_state_dict(state["opt"])
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
    cfg: TunedLensConfig,
    ckpt: Path | None = None,
    stop_after: int | None = None,
) -> tuple[TunedLens, dict]:
    """Train (or resume) a lens on ``items``; returns it and a summary of the run."""
    cfg = cfg.resolved()
    docs = tokenize_docs(lm, items, cfg.max_seq_len)
    trainer = Trainer(lm, docs, cfg, ckpt)
    lens = trainer.train(stop_after=stop_after)
    summary = dict(
        budget=cfg.budget,
        budget_note=(
            "TL paper defaults (250 steps x 2^18 tokens, seq 2048)"
            if cfg.budget == "paper"
            else "CPU budget (ours): a few minutes on a shared 2-core CPU; far below TL's 65.5M "
            "tokens, so the lens is only partly trained"
        ),
        steps_done=trainer.step,
        tokens_seen=trainer.tokens_seen,
        train_seconds=round(trainer.seconds, 2),
        train_docs=len(docs),
        train_kl_first=trainer.log[0]["kl"] if trainer.log else None,
        train_kl_last=trainer.log[-1]["kl"] if trainer.log else None,
        config=cfg.to_dict(),
    )
    lens.meta["training"] = summary
    return lens, summary


# ----------------------------------------------------------------------------------------------
# Evaluation and the method.


@torch.inference_mode()
def eval_records(lm: LoadedModel, lens: TunedLens, item: Item, max_tokens: int) -> list[dict]:
    """Per-layer means over positions 1..T-1 for both lenses (variant ``logit`` and ``tuned``)."""
    ids = lm.tokenize(item.text, max_tokens=max_tokens)  # (1, T)
    if ids.shape[1] < 3:
        return []
    states, logits = residual_states(lm, ids)  # (L+1, T, D), (T, V)
    recs = []
    for variant, st in (("logit", states), ("tuned", lens.translate(states))):
        r = lens_from_states(lm, st, logits, ids[0], k=1)
        recs += [
            x
            for x in doc_records(r, lm.n_layers, variant, item.prompt_id)
            if x["metric"] in EVAL_METRICS
        ]
    return recs


def process(
    lm: LoadedModel, items: list[Item], cfg: TunedLensConfig, ctx: RunContext
) -> dict[str, pd.DataFrame]:
    """Train (or resume, or reuse) the lens on the first paragraphs; evaluate on the rest."""
    res = cfg.resolved()
    train_items = items[: res.n_train_docs]
    eval_items = items[res.n_train_docs : res.n_train_docs + res.n_eval_docs]
    if not eval_items:
        raise ValueError(
            f"Got {len(items)} paragraphs: {res.n_train_docs} train the lens and none are left for "
            f"held-out evaluation; pass --n above {res.n_train_docs} or lower n_train_docs."
        )
    folder = lens_folder(lm.name, res.lens_dir or None)
    lens = None
    if (folder / CONFIG_FILE).exists():
        saved = TunedLens.load(folder, lm)
        if saved.meta.get("config_hash") == cfg.config_hash():
            lens = saved  # trained by an earlier run of this config: evaluate it again
    if lens is None:
        ckpt_root = Path(res.ckpt_dir) if res.ckpt_dir else DEFAULT_CKPT_DIR
        ckpt = ckpt_root / lm.name.replace("/", "__") / f"{cfg.config_hash()}.pt"
        trained, _ = train_lens(lm, train_items, cfg, ckpt)
        trained.meta["config_hash"] = cfg.config_hash()
        trained.meta["dataset"] = ctx.dataset
        trained.save(folder, rank=res.save_rank, dtype=res.save_dtype)
        lens = TunedLens.load(folder, lm)  # evaluate what was stored, not the float32 original
    recs = []
    for item in eval_items:
        recs += eval_records(lm, lens, item, res.eval_max_tokens)
    return {"metrics": ctx.metrics(recs)}


def run_one(lm: LoadedModel, prompt: str, cfg: TunedLensConfig) -> pd.DataFrame:
    """Per (layer, position) rows of both lenses for one prompt (needs a saved lens)."""
    lens = find_lens(lm, cfg.lens_dir or None)
    if lens is None:
        raise FileNotFoundError(
            f"No tuned lens for {lm.name} in {lens_folder(lm.name, cfg.lens_dir or None)}; train "
            f"one with `python -m precompute run --model {lm.name} --methods tuned_lens`."
        )
    return compare_frame(lm, lens, prompt, cfg.eval_max_tokens)


@torch.inference_mode()
def compare_frame(lm: LoadedModel, lens: TunedLens, prompt: str, max_tokens: int) -> pd.DataFrame:
    """Wide rows per (lens, layer, position): top-1 token, its prob, KL to final, entropy."""
    ids = lm.tokenize(prompt, max_tokens=max_tokens)  # (1, T)
    states, logits = residual_states(lm, ids)
    inputs = lm.token_strs(ids)
    frames = []
    for variant, st in (("logit", states), ("tuned", lens.translate(states))):
        r = lens_from_states(lm, st, logits, ids[0], k=1)
        n_states, n_pos = r.kl.shape
        top1 = r.topk_ids[..., 0]  # (S, T)
        strs = {i: lm.tokenizer.decode([i]) for i in set(top1.flatten().tolist())}
        layer = torch.arange(n_states).repeat_interleave(n_pos)
        pos = torch.arange(n_pos).repeat(n_states)
        frames.append(
            pd.DataFrame(
                {
                    "lens": variant,
                    "layer": layer.numpy(),
                    "position": pos.numpy(),
                    "input_token": [inputs[p] for p in pos.tolist()],
                    "token_id": top1.flatten().numpy(),
                    "token": [strs[i] for i in top1.flatten().tolist()],
                    "top1_prob": r.topk_probs[..., 0].flatten().numpy(),
                    "kl_to_final": r.kl.flatten().numpy(),
                    "entropy": r.entropy.flatten().numpy(),
                    "n_layers": lm.n_layers,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------
# Benchmark.


def training_flops(lm: LoadedModel, n_forward: int, n_loss: int, mean_len: float) -> dict:
    """FLOPs training cannot avoid (multiply-add = 2).

    * frozen forward: ``2 x`` block matrix parameters + the model's unembedding ``2 D V`` per token,
      plus causal attention ``2 T D`` per block (scores and mixing, half the square);
    * translators: ``2 D^2`` forward + ``2 D^2`` weight gradient per layer and token;
    * unembedding of every layer: ``2 D V`` forward + ``2 D V`` backward, and ``~6 V`` for softmax,
      KL and its gradient, per layer and token.
    """
    d, v, n = lm.d_model, lm.d_vocab, lm.n_layers
    block = sum(
        p.numel()
        for name, p in lm.bridge.original_model.named_parameters()
        if p.dim() == 2 and (".layers." in name or ".h." in name)
    )
    fwd = n_forward * (2 * block + 2 * d * v + 2 * n * mean_len * d)
    trans = n_loss * n * 4 * d * d
    unemb = n_loss * n * (4 * d * v + 6 * v)
    return dict(forward=fwd, translators=trans, unembedding=unemb, total=fwd + trans + unemb)


def bench_train(model_name: str, args) -> dict:
    """``tuned-lens-train``: a short training run; tokens, seconds, FLOPs and fraction of peak."""
    from precompute.datasets import load_wikitext
    from precompute.model.load import load_model

    lm = load_model(model_name, device=getattr(args, "device", "cpu"))
    items, _ = load_wikitext(getattr(args, "data_dir", None), 40)
    cfg = TunedLensConfig(num_steps=2, tokens_per_step=64, max_seq_len=64, micro_tokens=128)
    docs = tokenize_docs(lm, items, cfg.max_seq_len)
    Trainer(lm, docs, replace(cfg, tokens_per_step=8), None).train_step()  # warm-up, not timed
    trainer = Trainer(lm, docs, cfg, None)
    peak = matmul_peak_flops()
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    peak = max(peak, matmul_peak_flops())
    used = [len(trainer.docs[i]) for s in trainer.schedule for i in s]
    n_fwd = sum(used)
    n_loss = trainer.tokens_seen
    fl = training_flops(lm, n_fwd, n_loss, sum(used) / len(used))
    return dict(
        model=lm.name,
        tokens=n_loss,
        tokens_forward=n_fwd,
        steps=cfg.num_steps,
        train_seconds=round(secs, 3),
        flops=fl["total"],
        flops_breakdown=fl,
        matmul_flops_per_s=peak,
        fraction_of_peak=round(fl["total"] / secs / peak, 4),
        device=str(lm.device),
        threads=torch.get_num_threads(),
    )


METHOD = Method(
    name="tuned_lens",
    summary="Tuned lens: per-layer affine translators; held-out KL, CE, entropy vs logit lens.",
    config_cls=TunedLensConfig,
    dataset="wikitext",
    process=process,
    run_one=run_one,
    chunk_size=None,
    benches={"tuned-lens-train": bench_train},
)
