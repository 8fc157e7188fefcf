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

# The quickstart: a DP-SGD model and a non-private one on shipped data (experiments/quickstart.toml),
# then a summary table. --resume makes a second `make demo` reuse the finished models.
DPAUDIT := $(VENV)/bin/dpaudit
demo: install
	$(DPAUDIT) run experiments/quickstart.toml --resume --no-progress
	$(DPAUDIT) run experiments/quickstart.toml --resume --no-progress --set name='"quickstart-nondp"' \
	  --set output_dir='"runs/quickstart-nondp"' --set trainer.kind='"plain"' --set trainer.epochs=30 --set trainer.lr=0.1
	$(DPAUDIT) report runs/quickstart-dp runs/quickstart-nondp --out runs/quickstart-comparison
	@echo "MLflow UI on the local store: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1"

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis runs
