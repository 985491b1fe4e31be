# BERT from Scratch. Every target creates .venv first if it is missing.
#   make book      build the Jupyter Book (executes the notebooks) -> _build/html/index.html
#   make test      lint, unit + parity tests, notebooks (nbval), the Colab-like run, book build
#                  with warnings as errors
#   make test-colab  chapters run from an empty folder in a fresh environment that has only
#                  `pip install` of the package, as on Colab (scripts/colab_check.py)
#   make student   the student edition: solutions replaced by stubs -> student/notebooks
#                  (committed: Colab and Binder open it; run after changing a notebook)
#   make screenshots  key pages of the built book as PNG (headless Chromium) -> _build/screenshots
#   make bench     the benchmark matrix, our BERT vs transformers (BENCH_ARGS="--quick", "--size base")
#   make course-checkpoint  pretrain the course checkpoint again (about 25 minutes on 2 cores)
#                  and ship it in bertcourse/checkpoints/course-tiny with its card
#   make clean     remove build outputs (keeps .venv)
#
# PROFILE=ci|cpu|gpu picks how big the notebook runs are (default ci: minutes on a laptop).
# TORCH_SPEC picks the torch wheel installed before everything else, e.g. on a CUDA machine:
#   make book PROFILE=gpu TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= ci
TORCH_SPEC ?= torch==2.13.0
BOOK_FLAGS ?= --warningiserror --keep-going

export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED = 0

.PHONY: course-checkpoint venv book test test-package test-notebooks test-colab lint bench student screenshots clean distclean

venv: $(VENV)/.installed

# torch first, so that the resolver keeps this build instead of pulling another one.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed, found " + sys.version.split()[0] + ": run make PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (bertcourse)" > /dev/null
	touch $@

# The book's execution cache; book_cache_for(profile) empties it unless it holds runs of that
# profile (the cache does not know about profiles).
BOOK_CACHE := _build/.jupyter_cache
define book_cache_for
	@mkdir -p _build
	@if [ "$$(cat _build/.profile 2>/dev/null)" != "$(1)" ]; then rm -rf $(BOOK_CACHE); fi
	@echo "$(1)" > _build/.profile
endef

book: venv
	$(call book_cache_for,$(PROFILE))
	BERTCOURSE_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build . $(BOOK_FLAGS)
	$(PY) scripts/check_book.py _build/html
	@echo "Book: file://$(CURDIR)/_build/html/index.html"

lint: venv
	$(VENV)/bin/ruff check bertcourse tests scripts
	$(VENV)/bin/ruff format --check bertcourse tests scripts
	$(VENV)/bin/ruff format --check --line-length 88 notebooks
	$(VENV)/bin/ruff check --select E501 --line-length 88 notebooks
	$(PY) scripts/clean_notebooks.py --check

test-package: venv
	$(PY) -m pytest tests

# nbval's run of each notebook also goes into the book's execution cache
# (scripts/nbval_book_cache.py), so `make test`'s book build renders it instead of
# executing every chapter a second time.
test-notebooks: venv
	$(call book_cache_for,ci)
	BERTCOURSE_PROFILE=ci BERTCOURSE_BOOK_CACHE=$(BOOK_CACHE) PYTHONPATH=scripts \
		$(PY) -m pytest -p nbval_book_cache --nbval-lax --durations=0 notebooks/

test-colab: venv
	TORCH_SPEC="$(TORCH_SPEC)" $(PY) scripts/colab_check.py

test: lint test-package test-notebooks test-colab
	$(MAKE) book PROFILE=ci

student: venv
	$(PY) -m bertcourse student --out student/notebooks

screenshots: venv
	$(PY) scripts/render_pages.py $(SCREENSHOT_ARGS)

bench: venv
	$(PY) -m bertcourse bench $(BENCH_ARGS)

COURSE_CHECKPOINT_COMMAND = python -m bertcourse pretrain --corpus offline-large --size tiny \
	--no-nsp --vocab train:8000 --seq-len 64 --batch-size 64 --lr 3e-3 --mlm-probability 0.3 \
	--steps 8000 --eval-examples 2048 --out runs/course-tiny

course-checkpoint: venv
	$(VENV)/bin/$(COURSE_CHECKPOINT_COMMAND) --overwrite
	$(PY) scripts/package_course_checkpoint.py runs/course-tiny --command "$(COURSE_CHECKPOINT_COMMAND)"

clean:
	rm -rf _build .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV)
