# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv if it is missing, install $(TORCH_SPEC) first (a bare `torch` requirement
# would pull a multi-GB CUDA build), then seqlab itself with its test extra.

TORCH_SPEC ?= torch==2.13.0
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.seqlab-installed
DEMO_OUT := runs/demo

.PHONY: install test demo bench bench-gpu clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(INSTALLED)

test: $(INSTALLED)
	$(PY) -m pytest

# The main job on built-in data, the lecture's claim in one table (≤ 10 minutes on 2 CPU cores):
# on the reverse task at lengths 10 and 30, a plain LSTM seq2seq, an LSTM with attention and a
# Transformer (parameters matched within 10%, 1 minute of training each); then the Transformer's
# test scores and translations, and the HTML report with the tables and plots.
demo: $(INSTALLED)
	rm -rf $(DEMO_OUT)  # the demo's own previous output; your runs are never overwritten
	$(PY) -m seqlab experiment long-range --tasks reverse --lengths 10,30 --models lstm,lstm+attention,transformer \
		--steps 8000 --minutes 1 --out $(DEMO_OUT)
	$(PY) -m seqlab evaluate --ckpt $(DEMO_OUT)/runs/reverse-30-transformer --show 5 \
		--src $(DEMO_OUT)/data/reverse-30/test.src --ref $(DEMO_OUT)/data/reverse-30/test.tgt
	$(PY) -m seqlab report $(DEMO_OUT)

# seqlab against torch.nn.Transformer and Hugging Face Marian, training and decoding (≤ 15 minutes on 2 cores).
bench: $(INSTALLED)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/bench.py --json benchmarks/last.json

# GPT-2-small bf16 training on a CUDA GPU (the MFU target), seqlab vs Hugging Face GPT-2: needs a CUDA
# build of torch (TORCH_SPEC) and the bench extra. A few minutes on an H100/H200.
bench-gpu: $(INSTALLED)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/gpt_gpu.py --json benchmarks/gpt_gpu.json

clean:
	rm -rf $(VENV) runs data .pytest_cache
