# Two entry points, each working on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs, runs the demo on a real her2st section
#   make test   creates .venv, installs, runs the whole test suite and the docs build
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.phg2st-installed

# Real data stays outside the repository: use ../shared/data unless PHG2ST_DATA_DIR is already set.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin PHG2ST_DATA_DIR), undefined)
  ifneq ($(wildcard $(SHARED_DATA)/MANIFEST.md),)
    export PHG2ST_DATA_DIR := $(SHARED_DATA)
  endif
endif
export MPLBACKEND ?= agg

.PHONY: install display test demo docs lint clean

install: $(STAMP)

# torch and torchvision go first, from the exact builds the machines carry; the constraints file keeps pip
# from swapping them (or anything else) when the rest of the stack is resolved.
$(STAMP): pyproject.toml .ci/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c .ci/constraints.txt -e ".[test,docs,viewer,plot,io]"
	touch $(STAMP)

# The napari tests need a virtual display: Debian's Xvfb and the xcb libraries Qt loads. Installed when missing
# and this is root with apt (the CI machine); elsewhere those tests skip with the reason.
XVFB_DEBS := xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-image0 libxkbcommon-x11-0 libgl1 libegl1
display:
	@command -v Xvfb >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q $(XVFB_DEBS) >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $(XVFB_DEBS) >/dev/null; }; }; } \
		|| echo "Xvfb is not installed and cannot be installed here: the napari tests will skip."

test: install display
	@echo "PHG2ST_DATA_DIR=$(PHG2ST_DATA_DIR)"
	$(BIN)/python -m pytest
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

# Without PHG2ST_DATA_DIR the demo downloads the five her2st sections it needs (pinned commit, SHA-256 checked)
# into the user cache ($PHG2ST_CACHE_DIR), once.
demo: install
	@test -n "$(PHG2ST_DATA_DIR)" || echo "PHG2ST_DATA_DIR is not set: the her2st sections C2-C6 are downloaded into the cache (about 20 MB, once)."
	$(BIN)/phg2st demo --out demo_output

docs: install
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

lint: install
	$(BIN)/python -m pip install --quiet -c .ci/constraints.txt ruff
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs

clean:
	rm -rf $(VENV) docs/_build docs/generated demo_output .pytest_cache
