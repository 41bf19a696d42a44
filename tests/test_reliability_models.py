"""Reliability: Hub models load safetensors only, at a pinned revision recorded in provenance.

No Hub is needed: the transformers loaders are replaced by ones that build a tiny model and
record what they were asked for.
"""

from __future__ import annotations

import pytest

from precompute.model import catalog, load
from precompute.model.catalog import ModelUnavailableError


@pytest.fixture
def fake_hub(monkeypatch):
    import transformers

    asked: list[dict] = []
    model, tok = load.build_tiny("tiny-gpt2")

    def model_from(name, **kw):
        asked.append({"name": name, **kw})
        if name == "org/pickles-only":
            raise OSError("org/pickles-only does not appear to have a file named model.safetensors")
        model.config._commit_hash = "c0ffee" * 6 + "beef"
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda name, **kw: tok)
    monkeypatch.setattr(load, "hub_cached", lambda hf_id, revision=None: True)
    monkeypatch.setattr(load, "hub_reachable", lambda: False)
    return asked


def test_hub_models_are_safetensors_only_at_the_pinned_revision(fake_hub):
    lm = load.load_model("org/some-model", device="cpu", revision="v1.2")
    assert fake_hub[0]["use_safetensors"] is True and fake_hub[0]["revision"] == "v1.2"
    assert fake_hub[0]["local_files_only"] is True  # the Hub is down: the cache, no retries
    assert lm.provenance["source"] == "hub" and lm.provenance["revision"] == "v1.2"
    assert lm.provenance["commit"] == "c0ffee" * 6 + "beef"


def test_a_model_without_safetensors_is_refused_in_one_line(fake_hub):
    with pytest.raises(ModelUnavailableError, match="safetensors weights only") as err:
        load.load_model("org/pickles-only", device="cpu")
    assert "\n" not in str(err.value)


def test_uncached_and_unreachable_is_refused_before_any_download(monkeypatch):
    monkeypatch.setattr(load, "hub_cached", lambda hf_id, revision=None: False)
    monkeypatch.setattr(load, "hub_reachable", lambda: False)
    with pytest.raises(ModelUnavailableError, match="cannot be reached"):
        load.load_model("org/not-here", device="cpu")


@pytest.mark.parametrize("bad", ["../x", "a/../b", "org/model/extra", "org/ name", "/abs"])
def test_odd_model_ids_are_unknown(bad):
    with pytest.raises(catalog.UnknownModelError):
        catalog.resolve(bad)


def test_tokenize_refuses_a_cap_below_one(tiny_models):
    lm = tiny_models["tiny-gpt2"]
    for cap in (0, -1):
        with pytest.raises(ValueError, match="at least 1"):
            lm.tokenize("Hello there", max_tokens=cap)
