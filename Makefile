# Two commands on a fresh machine (Python 3.10+ and make): `make quickstart` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: quickstart test install install-dev clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,demo,export]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Synthetic corpus → train → evaluate on the held-out speakers → two example predictions.
quickstart: $(VENV)/.installed
	$(PY) -m mmemo synth data/synth --n 1000 --seed 0
	$(PY) -m mmemo train configs/quickstart.yaml train.overwrite=true
	$(PY) -m mmemo evaluate runs/quickstart/model data/synth/manifest.jsonl --split test
	$(PY) -m mmemo predict runs/quickstart/model --text "I am so glad. We are meeting Anna at the park tomorrow."
	$(PY) -m mmemo predict runs/quickstart/model --audio data/synth/wavs/synth_0003.wav \
		--text "$$($(PY) -c "import json; print(next(r['text'] for r in map(json.loads, open('data/synth/manifest.jsonl')) if r['id'] == 'synth_0003'))")"

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

clean:
	rm -rf runs data/synth
