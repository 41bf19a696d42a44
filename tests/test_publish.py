from pathlib import Path

import pytest
import yaml

from app.config import AppConfig
from app.data import resolve_source
from precompute.methods import get_method
from precompute.methods.logit_lens import LogitLensConfig
from precompute.results.jobs import run_job
from precompute.results.publish import PublishError, dataset_card, fetch, publish, stage, validate
from precompute.results.store import build


class FakeHub:
    """Records calls like huggingface_hub.HfApi would receive them."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(
            ("upload_folder", sorted(p.name for p in Path(kw["folder_path"]).rglob("*")), kw)
        )

        class Info:
            oid = "0123456789abcdef0123456789abcdef01234567"

        return Info()


@pytest.fixture
def results(tiny_models, tmp_path):
    run_job(
        tiny_models["tiny-gpt2"],
        get_method("logit_lens"),
        "examples",
        LogitLensConfig(max_tokens=16),
        tmp_path / "work",
        progress=False,
    )
    build(tmp_path / "work", tmp_path / "results")
    return tmp_path / "results"


def test_publish_is_one_commit_with_card_and_tables(results, tmp_path):
    hub = FakeHub()
    sha = publish(results, "org/stagescope-test", tmp_path / "stage", client=hub)
    assert sha.startswith("0123")
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    files = hub.calls[1][1]
    assert {
        "README.md",
        "stagescope.duckdb",
        "manifest.json",
        "metrics.parquet",
        "metrics_agg.parquet",
        "runs.parquet",
        "models.parquet",
    } <= set(files)
    assert hub.calls[1][2]["repo_type"] == "dataset"


def test_card_yaml_exposes_every_table(results, tmp_path):
    folder = stage(results, tmp_path / "stage", "org/x")
    text = (folder / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    names = {c["config_name"] for c in front["configs"]}
    assert {"metrics", "metrics_agg", "runs", "models", "lens_topk", "prompts"} <= names
    for c in front["configs"]:
        assert (folder / c["data_files"][0]["path"]).exists()


def test_nothing_is_uploaded_when_validation_fails(results, tmp_path):
    (results / "tables" / "runs.parquet").write_bytes(b"not a parquet file")
    hub = FakeHub()
    with pytest.raises(PublishError, match="runs.parquet"):
        publish(results, "org/x", tmp_path / "stage", client=hub)
    assert hub.calls == []


def test_missing_results_are_explained(tmp_path):
    with pytest.raises(PublishError, match="precompute build"):
        validate(tmp_path)


def test_bad_repo_id(results, tmp_path):
    with pytest.raises(PublishError, match="ORG/NAME"):
        publish(results, "no-slash", tmp_path / "stage", client=FakeHub())


def test_fetch_pins_the_revision(tmp_path):
    seen = {}

    def downloader(**kw):
        seen.update(kw)
        return str(tmp_path)

    assert fetch("org/x", "abc123", downloader=downloader) == tmp_path
    assert seen["revision"] == "abc123" and seen["repo_type"] == "dataset"


def test_app_falls_back_to_embedded_when_hub_unreachable():
    def offline(**kw):
        raise ConnectionError("no network")

    cfg = AppConfig.from_env({"STAGESCOPE_HF_REPO": "org/x", "STAGESCOPE_HF_REVISION": "abc"})
    src = resolve_source(cfg, fetcher=offline)
    assert src.label == "embedded" and "org/x@abc" in src.notice


def test_app_uses_hub_folder_when_reachable(results):
    cfg = AppConfig.from_env({"STAGESCOPE_HF_REPO": "org/x", "STAGESCOPE_HF_REVISION": "abc"})
    src = resolve_source(cfg, fetcher=lambda **kw: str(results))
    assert src.path == results and src.label.startswith("hub org/x@abc") and not src.notice


def test_card_is_pure():
    import pandas as pd

    models = pd.DataFrame([dict(model="m", family="f", n_layers=2, source="gguf")])
    assert dataset_card("o/n", {"metrics": 3}, models) == dataset_card(
        "o/n", {"metrics": 3}, models
    )
