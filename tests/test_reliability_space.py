"""Reliability: the Docker Space works with no network (no Docker needed).

The image's entry command (the Dockerfile's ``CMD``, with its ``ENV``) is run here on a loopback
port with the Hub switched off and every proxy pointing nowhere: the health check and every page
answer, demo mode offers the offline model, and its live panel runs on it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.config import AppConfig, offline_model

ROOT = Path(__file__).resolve().parent.parent
SLUGS = [p.stem.split("_", 1)[1] for p in sorted((ROOT / "pages").glob("[0-9][0-9]_*.py"))]
NO_NETWORK = {
    "HF_HUB_OFFLINE": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


def dockerfile() -> tuple[dict[str, str], list[str]]:
    """The image's ENV and CMD."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    cmd = json.loads(next(x for x in text.splitlines() if x.startswith("CMD "))[4:])
    return env, cmd


def _space_env() -> dict[str, str]:
    env, _ = dockerfile()
    env.pop("HOME", None)  # the weights dequantised at build time live in this HOME's cache
    env["PYTHONPATH"] = str(ROOT)  # the image's WORKDIR is the repository root
    return {**env, **NO_NETWORK}


def test_demo_mode_offers_the_offline_model():
    env, _ = dockerfile()
    cfg = AppConfig.from_env(env)
    assert cfg.demo and cfg.live_models == ("smollm2-135m",)
    assert offline_model(cfg.live_models[0])


def test_the_entry_command_serves_every_page_offline():
    _, cmd = dockerfile()
    assert cmd[:3] == ["streamlit", "run", "app/streamlit_app.py"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [a for a in cmd[1:] if not a.startswith(("--server.port", "--server.address"))]
    args += [f"--server.port={port}", "--server.address=127.0.0.1"]  # loopback only
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", *args],
        cwd=ROOT,
        env={**os.environ, **_space_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.time() + 90
        while True:
            try:
                with opener.open(f"{url}/_stcore/health", timeout=2) as r:
                    assert r.status == 200 and r.read() == b"ok"
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("the Space did not start: " + proc.stderr.read().decode()[-2000:])
                time.sleep(0.5)
        for slug in ["", *SLUGS]:
            with opener.open(f"{url}/{slug}", timeout=10) as r:
                assert r.status == 200 and b'<div id="root">' in r.read(), slug
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_the_space_live_lens_runs_offline(monkeypatch):
    for key, value in _space_env().items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(str(ROOT / "pages" / "10_logit_lens.py"), default_timeout=240).run()
    assert at.selectbox(key="live_model").options == ["smollm2-135m"]
    at.button(key="live_lens_df_run").click()
    at = at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "live_lens_df" in at.session_state


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "pages").glob("[0-9][0-9]_*.py")))
def test_every_page_renders_in_the_space_offline(page, monkeypatch):
    for key, value in _space_env().items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
