# The README's two commands: `make serve` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv data serve build publish test test-core test-site lint bench-build clean clean-cache

# Create the virtual environment once; reinstall only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[docs,test,bench]"
	touch $(STAMP)

venv: $(STAMP)

# MkDocs 1.x prints a banner about MkDocs 2 on every run; the build log is long enough.
export NO_MKDOCS_2_WARNING := 1
HOST ?= 127.0.0.1:8000

# The datasets the pages use (MNIST, the CIFAR-10 subset or archive, the spoken
# digits), fetched and verified once by download-datasets.sh into data/ (or
# $DIFFLAB_DATA; DATASETS_MIRROR=DIR copies them from a local folder). When they
# cannot be fetched (offline), the site builds on the embedded stand-ins and each
# page that wanted a dataset says so at its top. FETCH=0 skips this step.
FETCH ?= 1
data:
ifeq ($(FETCH),1)
	@bash download-datasets.sh --if-missing || echo "make: the datasets above could not be fetched; the pages that use them build on the embedded stand-ins and say so at their top."
else
	@echo "make: FETCH=$(FETCH): datasets not fetched; the pages use what is in data/ (or the stand-ins)."
endif

# The main command: serve the site with live reload (pages, notes, hooks and
# src/difflab are watched, see `watch:` in mkdocs.yml). It answers at once: notes
# not yet in .cache/notes/ are shown unexecuted under a notice and run in the
# background, one worker per core; each page updates when its note is done.
serve: $(STAMP) data
	$(BIN)/mkdocs serve -a $(HOST)

# The static site in site/ (plain .html links: open site/index.html from disk, or
# `python3 -m http.server -d site` for search). The GitHub Pages workflow
# (.github/workflows/pages.yml) runs exactly this, with DIFFLAB_PROFILE=quick.
build: $(STAMP) data
	$(BIN)/mkdocs build --strict

# Publish without GitHub Actions: the same build as `make build` (quick profile),
# pushed to the gh-pages branch. Set DIFFLAB_SITE_URL to the published address.
publish: build
	$(BIN)/mkdocs gh-deploy --strict --dirty --no-history --message "Site built from {sha}"

test-core: $(STAMP)
	$(BIN)/pytest src -q

# Site tests: --strict build (quick profile) once per session, every page in
# Debian's Chromium, links, and a broken note failing the build. DIFFLAB_SITE_DIR=site
# reuses an already built site instead of building one.
test-site: $(STAMP)
	$(BIN)/pytest tests -q

test: test-core test-site

# The build's own benchmark: a cold build (empty notes and model caches, in a
# temporary folder), a warm one, one after a prose edit, and the per-note table.
bench-build: $(STAMP)
	$(BIN)/python tests/bench_build.py

lint: $(STAMP)
	$(BIN)/ruff check src tests docs hooks

# The built site and the executed notes; of the trained models, the stale entries
# (those the current source no longer reaches: `python -m difflab cache list`).
clean:
	rm -rf site .cache/notes
	if test -x $(BIN)/python; then $(BIN)/python -m difflab cache prune; fi

# Every trained model too (each is trained again when next needed).
clean-cache: clean
	$(BIN)/python -m difflab cache prune --all
