# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing, install $(TORCH_SPEC) first (a bare `torch` requirement
# would pull a multi-GB CUDA build), then seqlab itself with its test extra.

TORCH_SPEC ?= torch==2.13.0
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.seqlab-installed
DEMO_DATA := data/reverse
DEMO_RUN := runs/reverse

.PHONY: install test demo clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(INSTALLED)

test: $(INSTALLED)
	$(PY) -m pytest

# The main job on built-in data: make the reverse task, train a small Transformer (≤ 5 minutes
# on 2 CPU cores), then score it on the test set and show five translations.
demo: $(INSTALLED)
	$(PY) -m seqlab data synth --task reverse --out $(DEMO_DATA) --vocab-size 30 --min-len 10 --max-len 30
	rm -rf $(DEMO_RUN)  # the demo's own previous run; your runs are never overwritten
	$(PY) -m seqlab train configs/reverse.yaml --set run_dir=$(DEMO_RUN)
	$(PY) -m seqlab evaluate --ckpt $(DEMO_RUN) --src $(DEMO_DATA)/test.src --ref $(DEMO_DATA)/test.tgt --show 5

clean:
	rm -rf $(VENV) runs data .pytest_cache
