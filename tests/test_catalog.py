import pytest

from precompute.model.catalog import CATALOG, UnknownModelError, resolve


def test_catalog_covers_the_seed_families():
    families = {s.family for s in CATALOG.values()}
    assert {"GPT-2", "Pythia", "Phi", "Llama", "Qwen", "Gemma", "SmolLM"} <= families
    assert all(s.n_layers > 0 and s.hf_id.count("/") == 1 for s in CATALOG.values())


def test_resolve_by_name_and_hf_id():
    assert resolve("smollm2-135m").hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve("EleutherAI/pythia-70m-deduped").name == "pythia-70m"
    assert resolve("someorg/some-model").family == "other"


@pytest.mark.parametrize("bad", ["", "gpt-7", "no spaces allowed", "a/b/c"])
def test_unknown_model_is_a_clear_error(bad):
    with pytest.raises(UnknownModelError, match="catalog name"):
        resolve(bad)
