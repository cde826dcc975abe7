# Two commands on a fresh machine (Python 3.10+ and make): `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: quickstart test test-fast lint install install-dev clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,demo,export,serve]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Synthetic corpus → train → evaluate on the held-out speakers → two example predictions.
quickstart: $(VENV)/.installed
	$(PY) -m mmemo synth data/synth --n 1000 --seed 0
	$(PY) -m mmemo train configs/quickstart.yaml train.overwrite=true
	$(PY) -m mmemo evaluate runs/quickstart/model data/synth/manifest.jsonl --split test
	@echo "Example 1, text only:"
	$(PY) -m mmemo predict runs/quickstart/model --text "I am so glad. We are meeting Anna at the park tomorrow."
	@echo "Example 2, a held-out speaker's clip (gold label: angry) with its transcript:"
	$(PY) -m mmemo predict runs/quickstart/model --audio data/synth/wavs/synth00011.wav --details \
		--text "That is the worst news. Ines called about the umbrella this morning."

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

# The tests that train nothing, open no browser and start no process (under a minute on 2 cores): a verdict on a
# config, data or metrics change in seconds. The `slow` marker and its rule are in tests/conftest.py.
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m "not slow" --durations=5

# ruff settles style: lint rules and formatting, both checked, nothing rewritten.
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf runs data/synth
