"""Benchmark: the expected cost of ``data/campaigns/seeds.toml`` per model, from a FLOP model.

``python -m precompute bench campaign-cost --data-dir DIR --json`` expands the seeds campaign
(items per job from the datasets, configs from the file) and counts forward-pass FLOPs per model:
``2 N`` per token for the model (N from the catalog) plus ``2 d V`` per token and read-out layer
for lens methods (d from ``N ~ 12 L d^2``, V by family), times the passes each method makes per
item (below; a rough count of what each method runs, not a measurement). It divides the total
by this machine's float32 matmul rate (measured now) and by an assumed GPU rate, so the figures
are estimates for planning. ``--model`` is not used.
"""

from __future__ import annotations

import math
from pathlib import Path

NAME = "campaign-cost"
ROOT = Path(__file__).resolve().parents[2]
#: Effective float32/TF32 rate assumed for one data-centre GPU (A100/H100 class, ~30 % of peak).
GPU_FLOPS = 50e12
VOCAB = {"GPT-2": 50257, "Pythia": 50304, "Llama": 128256, "Qwen": 151936, "Gemma": 256000}
TOKENS = {"wikitext": 200, "known_1000": 14, "facts": 14, "examples": 24}  # typical prompt length


def _passes(method: str, cfg, n_layers: int, tokens: int) -> tuple[float, float]:
    """(model forward passes, lens read-outs per token and layer) per item, roughly."""
    get = lambda k, d=1: getattr(cfg, k, d)  # noqa: E731
    if method == "logit_lens":
        return 1, 1
    if method in ("lens_entropy", "guess_refine"):
        return 1, 2
    if method == "layer_ablation":
        return len(str(get("variants", "block")).split(",")) * n_layers, 0
    if method == "layer_swap":
        return n_layers - 1, 0
    if method == "attention_knockout":
        return 3 * math.ceil(n_layers / get("stride")), 0
    if method == "activation_patching":
        return tokens * math.ceil(n_layers / get("stride")), 0
    if method == "causal_tracing":
        kinds = len(str(get("kinds", "hidden")).split(","))
        return get("samples", 10) * kinds * tokens * math.ceil(n_layers / get("stride")), 0
    if method == "tuned_lens":  # evaluation; training is counted in `estimate`
        return 1, 2
    return 1, 0


def estimate(toml: Path, data_dir: Path | None) -> dict[str, dict]:
    """Estimated FLOPs per model of a campaign file."""
    from precompute.model.catalog import resolve
    from precompute.results.campaign import load_campaign, plan

    out: dict[str, dict] = {}
    for job in plan(load_campaign(toml), data_dir):
        spec = resolve(job.model)
        n, layers = spec.n_params, spec.n_layers
        d = math.sqrt(n / (12 * layers))
        tokens = min(TOKENS.get(job.dataset, 64), getattr(job.config, "max_tokens", 10**9))
        fwd, lens = _passes(job.method, job.config, layers, tokens)
        per_token = 2 * n * fwd + 2 * d * VOCAB.get(spec.family, 50257) * (layers + 1) * lens
        row = out.setdefault(job.model, {"params": n, "layers": layers, "chunks": 0, "flop": 0.0})
        row["chunks"] += len(job.starts)
        row["flop"] += per_token * tokens * job.n_total
        if job.method == "tuned_lens":  # training: forward, then the lenses forward and back
            steps = getattr(job.config, "num_steps", 0) * getattr(job.config, "tokens_per_step", 0)
            row["flop"] += steps * (2 * n + 3 * 2 * d * VOCAB.get(spec.family, 50257) * layers)
    return out


def run(model_name: str, args) -> dict:
    """Estimated cost of seeds.toml per model: PFLOP, CPU hours here, GPU hours (assumed rate)."""
    from precompute.bench.util import matmul_peak_flops

    cpu = matmul_peak_flops()
    data = Path(args.data_dir) if getattr(args, "data_dir", None) else None
    rows = estimate(ROOT / "data" / "campaigns" / "seeds.toml", data)
    models = {
        m: {
            "params_b": round(r["params"] / 1e9, 3),
            "chunks": r["chunks"],
            "pflop": round(r["flop"] / 1e15, 2),
            "cpu_hours_here": round(r["flop"] / cpu / 3600, 1),
            "gpu_hours": round(r["flop"] / GPU_FLOPS / 3600, 2),
        }
        for m, r in rows.items()
    }
    total = sum(r["flop"] for r in rows.values())
    return {
        "cpu_matmul_gflops": round(cpu / 1e9, 1),
        "gpu_flops_assumed": GPU_FLOPS,
        "total_pflop": round(total / 1e15, 1),
        "total_gpu_hours": round(total / GPU_FLOPS / 3600, 1),
        "models": models,
    }
