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

# The quickstart, three audits side by side (configs in examples/):
#   leaky-model      a non-private MLP on synthetic Purchase data: it visibly leaks (REPORTED);
#   whitebox-plugin  a correct DP-SGD optimizer, audited in one run: NO VIOLATION DETECTED;
#   planted-bug      the same audit of an optimizer that forgets to clip: VIOLATION (exit 1, expected).
# --resume makes a second `make demo` reuse the finished runs.
DPAUDIT := $(VENV)/bin/dpaudit
demo: install
	$(DPAUDIT) run examples/leaky_model.toml --resume --no-progress
	$(DPAUDIT) run examples/whitebox_plugin.toml --resume --no-progress
	$(DPAUDIT) run examples/whitebox_plugin.toml --resume --no-progress --set name='"planted-bug"' \
	  --set output_dir='"runs/planted-bug"' --set trainer.plugin='"examples/my_dp_optimizer.py:ForgetsToClip"'; \
	  rc=$$?; [ $$rc -eq 1 ] || { echo "demo: expected the planted bug to be caught (exit 1), got exit $$rc"; exit 1; }
	$(DPAUDIT) report runs/leaky-model runs/whitebox-plugin runs/planted-bug --out runs/demo-comparison
	@echo "Figures: runs/leaky-model/roc.png (attacks), runs/*/epsilon.png (bound against claim),"
	@echo "  runs/demo-comparison/comparison.png; reports: runs/*/report.html"
	@echo "MLflow UI on the local store: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1"

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis runs mlflow.db mlartifacts
