"""Reliability: every bad CLI input is one line saying what to change, within seconds.

The matrix of issue 12: out-of-range ``--set`` values, a dataset name that walks out of the work
folder, an uncached Hub model with the Hub unreachable, a corrupt parquet in ``list``, ``publish``
with the Hub down, two runs of one job at once, and a prompt over the token cap.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from precompute.cli import main
from precompute.methods.logit_lens import LogitLensConfig
from precompute.results.jobs import JobSpec, job_lock

ROOT = Path(__file__).resolve().parent.parent
RUN_ONE = ["run-one", "--model", "tiny-gpt2", "--method", "logit_lens", "--prompt", "Hello"]


def _one_line_error(capsys, args, code=2) -> str:
    assert main(args) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "setting,message",
    [
        ("k=0", "at least 1"),
        ("k=-1", "at least 1"),
        ("max_tokens=-1", "at least 1"),
        ("max_tokens=0", "at least 1"),
        ("k=many", "not a valid int"),
        ("variant_x=1", "valid options"),
    ],
)
def test_set_values_are_checked(capsys, setting, message):
    err = _one_line_error(capsys, [*RUN_ONE, "--set", setting])
    assert message in err


def test_set_booleans_are_true_or_false(capsys):
    args = ["run-one", "--model", "tiny-gpt2", "--method", "attention_knockout"]
    err = _one_line_error(capsys, [*args, "--prompt", "x", "--set", "use_cache=maybe"])
    assert "true or false" in err


@pytest.mark.parametrize("dataset", ["../../x", "wikitext/../../y", "nope"])
def test_bad_dataset_is_rejected_before_any_folder(capsys, tmp_path, dataset):
    work = tmp_path / "work"
    args = ["run", "--model", "tiny-gpt2", "--methods", "logit_lens", "--work-dir", str(work)]
    err = _one_line_error(capsys, [*args, "--dataset", dataset])
    assert "Unknown dataset" in err and "use one of" in err
    assert list(tmp_path.rglob("*")) == []  # nothing was created, inside or outside


@pytest.mark.parametrize("model", ["../../evil", "../x", "a/b/c"])
def test_bad_model_names_are_rejected(capsys, tmp_path, model):
    args = ["run", "--model", model, "--methods", "logit_lens", "--work-dir", str(tmp_path / "w")]
    assert "Unknown model" in _one_line_error(capsys, args)
    assert list(tmp_path.rglob("*")) == []


def test_uncached_hub_model_fails_fast_when_offline(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _one_line_error(capsys, [*RUN_ONE[:2], "nobody/no-such-model", *RUN_ONE[3:]])
    assert "cannot be reached" in err and "smollm2-135m" in err


def test_hub_reachability_is_checked_once(monkeypatch):
    from precompute.model import catalog

    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise OSError("unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(catalog.socket, "create_connection", refuse)
    monkeypatch.setattr(catalog, "_HUB_STATE", {})
    assert [catalog.hub_reachable() for _ in range(5)] == [False] * 5
    assert len(calls) == 1


def test_list_with_a_corrupt_parquet(capsys, tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "metrics.parquet").write_bytes(b"PAR1 not really parquet")
    err = _one_line_error(capsys, ["list", "--results", str(tmp_path)])
    assert "not a readable parquet file" in err and "build" in err


def test_publish_with_the_hub_down(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _one_line_error(capsys, ["publish", "--repo-id", "org/name"])
    assert "cannot be reached" in err and "nothing was uploaded" in err


def test_publish_upload_failure_is_one_line(tmp_path):
    from precompute.results.publish import PublishError, publish

    class Down:
        def create_repo(self, *a, **k):
            raise ConnectionError("Connection refused\nlong details")

    with pytest.raises(PublishError, match="failed .ConnectionError: Connection refused"):
        publish(ROOT / "data" / "results", "org/name", tmp_path / "stage", client=Down())


def test_two_runs_of_one_job_at_once(capsys, tmp_path):
    work = tmp_path / "work"
    spec = JobSpec("tiny-gpt2", "logit_lens", "examples", LogitLensConfig())
    folder = spec.folder(work)
    args = ["run", "--model", "tiny-gpt2", "--methods", "logit_lens", "--dataset", "examples"]
    with job_lock(folder / ".lock", "run", folder):
        err = _one_line_error(capsys, [*args, "--work-dir", str(work), "--quiet"])
    assert "already working on" in err and "wait for it" in err
    assert not (folder / "job.json").exists()


def test_run_one_over_the_token_cap_says_so(capsys):
    assert main([*RUN_ONE[:-1], "word " * 400, "--set", "max_tokens=16", "--json"]) == 0
    err = capsys.readouterr().err
    assert "only the first 16 were analysed" in err and "max_tokens" in err


def test_n_must_be_positive(capsys, tmp_path):
    args = ["run", "--model", "tiny-gpt2", "--methods", "logit_lens", "--n", "0"]
    assert "--n must be at least 1" in _one_line_error(capsys, [*args, "--work-dir", str(tmp_path)])
