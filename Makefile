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
# --resume makes a second `make demo` reuse the finished runs; a run directory whose saved
# config no longer matches (left by an older dpaudit, whose defaults differed) is started over.
DPAUDIT := $(VENV)/bin/dpaudit
# $(call demo_run,CONFIG,RUN DIRECTORY,EXPECTED EXIT CODE,EXTRA ARGUMENTS)
define demo_run
	@echo "$(DPAUDIT) run $(1) --resume --no-progress $(4)"
	@err=$$(mktemp); $(DPAUDIT) run $(1) --resume --no-progress $(4) 2> $$err; rc=$$?; cat $$err >&2; \
	if [ $$rc -eq 2 ] && grep -q -- "--resume: the config differs" $$err; then \
	  echo "demo: $(2) was made with another config (an older dpaudit?); starting it over"; \
	  rm -rf $(2); $(DPAUDIT) run $(1) --resume --no-progress $(4); rc=$$?; fi; \
	rm -f $$err; \
	[ $$rc -eq $(3) ] || { echo "demo: expected exit $(3) from $(2), got exit $$rc"; exit 1; }
endef
demo: install
	$(call demo_run,examples/leaky_model.toml,runs/leaky-model,0)
	$(call demo_run,examples/whitebox_plugin.toml,runs/whitebox-plugin,0)
	$(call demo_run,examples/whitebox_plugin.toml,runs/planted-bug,1,--set name='"planted-bug"' \
	  --set output_dir='"runs/planted-bug"' --set trainer.plugin='"examples/my_dp_optimizer.py:ForgetsToClip"')
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
