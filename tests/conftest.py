"""Shared fixtures: tiny models (cached per session), Streamlit cache hygiene, synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Cap math threads for the whole session (set before torch/numpy load their thread pools): on a
# shared 2-core machine, oversubscribed threads multiplied the suite's time several-fold.
# STAGESCOPE_TEST_THREADS overrides (e.g. on a quiet many-core machine).
_THREADS = os.environ.get("STAGESCOPE_TEST_THREADS", "1")
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)


def pytest_configure(config):
    """Cap torch's intra-op threads too (torch reads OMP_NUM_THREADS only at first import)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_models():
    """The three tiny random architectures, loaded once."""
    from precompute.model.load import TINY_ARCHS, load_model

    return {arch: load_model(arch, device="cpu") for arch in TINY_ARCHS}


@pytest.fixture(params=["tiny-gpt2", "tiny-neox", "tiny-llama"])
def tiny(request, tiny_models):
    """Each tiny architecture in turn."""
    return tiny_models[request.param]


@pytest.fixture(autouse=True)
def _clear_streamlit_caches():
    """Streamlit caches are process-global: clear them around every test."""
    yield
    try:
        import streamlit as st

        st.cache_data.clear()
        st.cache_resource.clear()
    except Exception:  # streamlit not imported in this test
        pass


@pytest.fixture
def wikitext_dir(tmp_path):
    """A --data-dir with a synthetic WikiText-style file of many paragraphs."""
    words = ["the", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "sat", "on", "the"] + [
        "log",
        "near",
        "Paris",
        "in",
        "France",
    ]
    lines = [" = Heading = "]
    for i in range(120):
        para = " ".join(words[(i + j) % len(words)] for j in range(60))
        lines.append(f" Paragraph {i} : {para} .")
    (tmp_path / "wikitext-2-raw-test.txt").write_text("\n".join(lines))
    return tmp_path
