"""App configuration, read once from the environment into a frozen dataclass.

| variable | meaning | default |
|---|---|---|
| ``STAGESCOPE_HF_REPO`` | dataset repo with published results | unset: embedded results |
| ``STAGESCOPE_HF_REVISION`` | pinned revision (commit sha) of that repo | ``main`` |
| ``STAGESCOPE_RESULTS_DIR`` | a local results folder instead | ``data/results`` |
| ``STAGESCOPE_LIVE_MODELS`` | comma-separated models offered live | ``smollm2-135m,gemma3-270m`` |
| ``STAGESCOPE_DEMO`` | demo mode: shorter prompts, one live model (the first offline one) | off |
| ``STAGESCOPE_MAX_PROMPT_CHARS`` | longest live prompt | 2000 (300 in demo mode) |
| ``STAGESCOPE_LIVE_SLOTS`` | live requests computing at once | 2 |
| ``STAGESCOPE_LIVE_QUEUE`` | live requests waiting at most (then "busy") | 40 |
| ``STAGESCOPE_LIVE_TIME_LIMIT`` | seconds a live request may compute | 30 (20 in demo mode) |
| ``STAGESCOPE_LIVE_HEAVY_TIME_LIMIT`` | the same for long traces (never the last slot) | 120 (60) |
| ``STAGESCOPE_LIVE_MAX_ITEMS`` | longest list in a live panel (sentences ...) | 24 (12 in demo) |
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_RESULTS = ROOT / "data" / "results"


@dataclass(frozen=True)
class AppConfig:
    """Settings of one app process."""

    hf_repo: str
    hf_revision: str
    results_dir: Path
    live_models: tuple[str, ...]
    demo: bool
    max_prompt_chars: int
    max_live_tokens: int
    live_slots: int = 2
    live_queue: int = 40
    live_time_limit_s: float = 30.0
    live_heavy_time_limit_s: float = 120.0
    max_live_items: int = 24

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AppConfig:
        """Read the settings from environment variables."""
        env = dict(os.environ if env is None else env)
        demo = env.get("STAGESCOPE_DEMO", "").lower() in ("1", "true", "yes")
        live = tuple(
            m.strip()
            for m in env.get("STAGESCOPE_LIVE_MODELS", "smollm2-135m,gemma3-270m").split(",")
            if m.strip()
        )
        if demo:  # one model, and one that needs no network when there is one
            live = tuple(m for m in live if offline_model(m))[:1] or live[:1]

        def num(key: str, default: float) -> float:
            raw = env.get(key, "").strip()
            try:
                value = float(raw) if raw else default
            except ValueError:
                value = default
            return value if value > 0 else default

        return cls(
            hf_repo=env.get("STAGESCOPE_HF_REPO", "").strip(),
            hf_revision=env.get("STAGESCOPE_HF_REVISION", "main").strip() or "main",
            results_dir=Path(env.get("STAGESCOPE_RESULTS_DIR", EMBEDDED_RESULTS)),
            live_models=live,
            demo=demo,
            max_prompt_chars=int(env.get("STAGESCOPE_MAX_PROMPT_CHARS", 300 if demo else 2000)),
            max_live_tokens=64 if demo else 256,
            live_slots=int(num("STAGESCOPE_LIVE_SLOTS", 2)),
            live_queue=int(num("STAGESCOPE_LIVE_QUEUE", 40)),
            live_time_limit_s=num("STAGESCOPE_LIVE_TIME_LIMIT", 20.0 if demo else 30.0),
            live_heavy_time_limit_s=num(
                "STAGESCOPE_LIVE_HEAVY_TIME_LIMIT", 60.0 if demo else 120.0
            ),
            max_live_items=int(num("STAGESCOPE_LIVE_MAX_ITEMS", 12 if demo else 24)),
        )


def offline_model(name: str) -> bool:
    """Whether a live model loads here with no network (tiny, or its GGUF package installed)."""
    from precompute.model.catalog import CATALOG

    if name in ("tiny-gpt2", "tiny-neox", "tiny-llama"):
        return True
    package = CATALOG[name].gguf_package if name in CATALOG else ""
    return bool(package) and importlib.util.find_spec(package) is not None
