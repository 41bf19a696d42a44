"""Datasets: the ``facts_known`` pool (team facts + known_1000, deduplicated) on synthetic data."""

from __future__ import annotations

import json

import pytest

from precompute.datasets import DATASETS, check_dataset_name, load_dataset, load_facts
from precompute.facts import fact_parts


def _known_rows(team) -> list[dict]:
    """A synthetic known_1000.json: new facts, and duplicates of team facts and of each other."""
    first = team[0].fields  # e.g. France / Paris
    return [
        {  # new fact
            "known_id": 0,
            "subject": "Vinson Massif",
            "attribute": "Antarctica",
            "template": "{} is located in the continent of",
            "prompt": "Vinson Massif is located in the continent of",
            "relation_id": "P30",
        },
        {  # the team's first fact, other wording: same subject and answer -> dropped
            "known_id": 1,
            "subject": first["subject"],
            "attribute": first["answer"].upper(),
            "template": "{}'s capital city is",
            "prompt": f"{first['subject']}'s capital city is",
            "relation_id": "P36",
        },
        {  # the team's first prompt, other spacing -> dropped
            "known_id": 2,
            "subject": "X",
            "attribute": "Y",
            "template": "{}",
            "prompt": "  " + team[0].text.replace(" ", "  "),
            "relation_id": "P1",
        },
        {  # new fact
            "known_id": 3,
            "subject": "Danielle Darrieux",
            "attribute": "French",
            "template": "The mother tongue of {} is",
            "prompt": "The mother tongue of Danielle Darrieux is",
            "relation_id": "P103",
        },
        {  # the same prompt as known 3 -> dropped
            "known_id": 4,
            "subject": "Danielle Darrieux",
            "attribute": "English",
            "template": "The mother tongue of {} is",
            "prompt": "The mother tongue of Danielle Darrieux is",
            "relation_id": "P103",
        },
    ]


@pytest.fixture
def known_dir(tmp_path):
    """A --data-dir with a synthetic known_1000.json."""
    team, _ = load_facts()
    (tmp_path / "known_1000.json").write_text(json.dumps(_known_rows(team)))
    return tmp_path


def test_facts_known_is_team_facts_then_new_known_facts(known_dir):
    team, _ = load_facts()
    items, sha = load_dataset("facts_known", known_dir)
    assert check_dataset_name("facts_known") == "facts_known" and "facts_known" in DATASETS
    ids = [it.prompt_id for it in items]
    assert ids == [it.prompt_id for it in team] + ["known-0000", "known-0003"]
    assert len(set(ids)) == len(ids)
    for it in items:  # every item reads through the one fact prompt
        prompt, subject, answer, relation = fact_parts(it)
        assert prompt == it.text and subject in prompt and answer and relation
        assert it.fields["source"] in ("facts", "known_1000")
    vinson = items[len(team)]
    assert fact_parts(vinson) == (
        "Vinson Massif is located in the continent of",
        "Vinson Massif",
        "Antarctica",
        "P30",
    )
    # Team items keep their ids, text and answers as in the ``facts`` dataset.
    assert [fact_parts(a) for a in items[: len(team)]] == [fact_parts(b) for b in team]
    again, sha2 = load_dataset("facts_known", known_dir)
    assert [it.prompt_id for it in again] == ids and sha2 == sha  # stable
    assert [it.prompt_id for it in load_dataset("facts_known", known_dir, 3)[0]] == ids[:3]


def test_facts_known_hash_covers_the_known_file(known_dir, tmp_path_factory):
    _, sha = load_dataset("facts_known", known_dir)
    other = tmp_path_factory.mktemp("other")
    rows = json.loads((known_dir / "known_1000.json").read_text())[:1]
    (other / "known_1000.json").write_text(json.dumps(rows))
    items, sha_other = load_dataset("facts_known", other)
    assert sha_other != sha and items[-1].prompt_id == "known-0000"


def test_knockout_runs_on_facts_known(tiny_models, known_dir, tmp_path):
    """``run`` with ``--dataset facts_known --data-dir``: every fact tried is counted."""
    import pandas as pd

    from precompute.methods import get_method
    from precompute.results.jobs import run_job

    lm = tiny_models["tiny-gpt2"]
    method = get_method("attention_knockout")
    cfg = method.config_cls().with_overrides({"window": "1"})
    team, _ = load_facts()
    n = len(team) + 2
    folder = run_job(lm, method, "facts_known", cfg, tmp_path, known_dir, n_items=n, progress=False)
    assert json.loads((folder / "job.json").read_text())["status"] == "done"
    m = pd.concat(pd.read_parquet(p) for p in folder.glob("chunks/*/metrics.parquet"))
    tried = m[m["metric"].isin(["answer_correct", "subject_found"])]
    assert tried["prompt_id"].nunique() == len(tried) == n  # one summary row per fact tried
    kept = set(m.loc[m["layer_kind"] == "window_center", "prompt_id"])
    correct = m[m["metric"] == "answer_correct"]
    assert kept == set(correct.loc[correct["value"] == 1, "prompt_id"])
    assert {"known-0000", "known-0003"} <= set(tried["prompt_id"])
