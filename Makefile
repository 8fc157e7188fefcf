# Two commands on a fresh clone with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the dependency pins change.
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Until the audit pipeline lands, the demo runs the statistics on one simulated DP-SGD run:
# a correct one and one with a planted bug (a tenth of the noise), both claiming epsilon = 2.
demo: install
	@mkdir -p runs/demo
	$(VENV)/bin/dpaudit bound accountant --noise-multiplier 1.0 --sample-rate 0.0256 --steps 1170 --delta 1e-5
	$(VENV)/bin/dpaudit bound one-run --canaries 1000 --guesses 100 --correct 90 --delta 1e-5
	$(PY) -m experiments.demo_scores runs/demo/correct.npz --epsilon 2
	$(VENV)/bin/dpaudit bound scores --scores runs/demo/correct.npz --delta 1e-5
	$(PY) -m experiments.demo_scores runs/demo/buggy.npz --epsilon 2 --noise-factor 0.1
	$(VENV)/bin/dpaudit bound scores --scores runs/demo/buggy.npz --delta 1e-5

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis runs
