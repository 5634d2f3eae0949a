# fairseq_smallcap — `make install`, `make test`, `make demo`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.smallcap-installed
# Runtime needs of fairseq-fixed, installed first so that it can be built with
# --no-build-isolation --no-deps (its build isolation would pull a multi-GB CUDA torch, and its
# torchaudio requirement pins an older torch).
FAIRSEQ_NEEDS := torch==2.13.0 "numpy>=1.21.3" cython cffi "hydra-core==1.3.2" "omegaconf==2.3.0" \
                 regex "sacrebleu>=2.0" tqdm bitarray packaging scikit-learn setuptools wheel
# Curation: OpusFilter (its filters), py3langid (language id; OpusFilter 3.3.1 calls
# LanguageIdentifier.from_pickled_model, gone in py3langid 0.4), xxhash (dedup hashes);
# the WMT14 recipe: Moses tokenizer and subword-nmt; benchmark plots: matplotlib;
# smallcap-embeddings (--init-embeddings): gensim; smallcap-curate's engine: datatrove;
# smallcap-export-ct2 / smallcap-translate: ctranslate2.
PLUGIN_NEEDS  := sentencepiece pytest pytest-xdist==3.8.0 opusfilter==3.3.1 py3langid==0.3.0 xxhash \
                 opus-fast-mosestokenizer subword-nmt matplotlib gensim==4.4.0 \
                 datatrove==0.10.1 tokenizers==0.23.3 ctranslate2==4.8.5

.PHONY: install test demo param-table clean-venv

install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(FAIRSEQ_NEEDS) $(PLUGIN_NEEDS)
	$(BIN)/python -c "import fairseq" 2>/dev/null || \
	  $(BIN)/python -m pip install --no-build-isolation --no-deps fairseq-fixed==0.12.3.1
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import fairseq_smallcap, sentencepiece, sacrebleu; print('fairseq_smallcap installed')"
	touch $(STAMP)

# two test processes (pytest-xdist): the tests run one thread each (tests/conftest.py); the 15
# slowest are listed at the end, so a CI log shows where its minutes went
test: install
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash examples/multi30k/demo.sh $(DEMO_ARGS)

param-table: install
	$(BIN)/smallcap-param-table

clean-venv:
	rm -rf $(VENV)
