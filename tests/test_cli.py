import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from precompute.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "precompute", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_run_one_json():
    out = _cli(
        "run-one",
        "--model",
        "tiny-llama",
        "--method",
        "logit_lens",
        "--prompt",
        "the cat sat on the mat",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows and {"layer", "position", "metric", "value", "token"} <= set(rows[0])
    metrics = {r["metric"] for r in rows}
    assert {"kl_to_final", "entropy", "top1_prob"} <= metrics
    assert min(r["position"] for r in rows) == 0


@pytest.mark.parametrize("prompt", ["🙂🚀 émoji ünïcode 中文", "word " * 1000])
def test_run_one_odd_prompts(capsys, prompt):
    assert (
        main(
            [
                "run-one",
                "--model",
                "tiny-gpt2",
                "--method",
                "logit_lens",
                "--prompt",
                prompt,
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert max(r["position"] for r in rows) < 512  # long prompts are cut to max_tokens


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["run-one", "--model", "gpt-7", "--method", "logit_lens", "--prompt", "x"],
            "Unknown model",
        ),
        (
            ["run-one", "--model", "tiny-gpt2", "--method", "nope", "--prompt", "x"],
            "Unknown method",
        ),
        (
            ["run-one", "--model", "tiny-gpt2", "--method", "logit_lens", "--prompt", "  "],
            "prompt is empty",
        ),
        (
            [
                "run-one",
                "--model",
                "tiny-gpt2",
                "--method",
                "logit_lens",
                "--prompt",
                "x",
                "--set",
                "k=many",
            ],
            "not a valid int",
        ),
        (
            [
                "run",
                "--model",
                "tiny-gpt2",
                "--methods",
                "logit_lens",
                "--data-dir",
                "/nonexistent",
                "--work-dir",
                "/tmp/stagescope-test-nowhere",
            ],
            "could not be fetched",
        ),
        (["bench", "nope"], "Unknown benchmark"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_list_json_on_embedded_results():
    out = _cli("list", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert all({"model", "method", "rows"} <= set(r) for r in rows)
    assert {"smollm2-135m", "gemma3-270m"} <= {
        r["model"] for r in rows if r["method"] == "logit_lens"
    }
