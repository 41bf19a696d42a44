"""App configuration, read once from the environment into a frozen dataclass.

| variable | meaning | default |
|---|---|---|
| ``STAGESCOPE_HF_REPO`` | dataset repo with published results | unset: embedded results |
| ``STAGESCOPE_HF_REVISION`` | pinned revision (commit sha) of that repo | ``main`` |
| ``STAGESCOPE_RESULTS_DIR`` | a local results folder instead | ``data/results`` |
| ``STAGESCOPE_LIVE_MODELS`` | comma-separated models offered live | ``smollm2-135m,gemma3-270m`` |
| ``STAGESCOPE_DEMO`` | demo mode: shorter prompts, first live model only | off |
| ``STAGESCOPE_MAX_PROMPT_CHARS`` | longest live prompt | 2000 (300 in demo mode) |
"""

from __future__ import annotations

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
        if demo:
            live = live[:1]
        return cls(
            hf_repo=env.get("STAGESCOPE_HF_REPO", "").strip(),
            hf_revision=env.get("STAGESCOPE_HF_REVISION", "main").strip() or "main",
            results_dir=Path(env.get("STAGESCOPE_RESULTS_DIR", EMBEDDED_RESULTS)),
            live_models=live,
            demo=demo,
            max_prompt_chars=int(env.get("STAGESCOPE_MAX_PROMPT_CHARS", 300 if demo else 2000)),
            max_live_tokens=64 if demo else 256,
        )
