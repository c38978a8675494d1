# The two commands of the README: `make run` (the main job) and `make test` (the suite).
# Both work from a fresh clone: they create .venv, install, and fetch what they need.

PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
# Handwriting fonts for the generated photo and drawing test sets, and Chromium for the
# browser tests (Debian packages; Playwright never downloads a browser of its own).
FONT_PACKAGES := fonts-dkg-handwriting fonts-breip fonts-bwht fonts-humor-sans \
	fonts-comic-neue fonts-dancingscript fonts-ecolier-court fonts-klee fonts-kristi
APT_PACKAGES := $(FONT_PACKAGES) chromium

.PHONY: run test install install-dev data system-packages lint bench clean on-device-model

run: install data
	$(BIN)/digitrec train --dataset mnist --keep-existing
	$(BIN)/digitrec evaluate
	$(BIN)/digitrec serve --host $(HOST) --port $(PORT)

test: install-dev data system-packages
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check src tests benchmarks

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[web]'

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,cnn,web,dask,bench,export]'

data: install
	$(BIN)/digitrec data fetch mnist

# Installs the Debian packages the tests use, when missing (needs root, as in CI).
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# Rebuilds the on-device model the web app ships (static/ondevice): cnn-robust on full MNIST,
# exported to ONNX. Deterministic for its seeds and one torch thread; takes 20-40 minutes.
ON_DEVICE := src/digitrec/web/static/ondevice
on-device-model: install-dev data
	$(BIN)/digitrec train cnn-robust --dataset mnist -o build/on-device -p n_threads=1
	$(BIN)/digitrec export build/on-device --format onnx -o $(ON_DEVICE)/model.onnx \
		--describe $(ON_DEVICE)/model.json

bench: install-dev data
	$(BIN)/python benchmarks/knn_mnist.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
