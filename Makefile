# geonas: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/geonas demo

test: install
	@# the store tests also run on a real PostgreSQL: install the OS package when we can (root + apt)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] \
		|| { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || true
	@# the page tests drive the OS's Chromium (never a Playwright browser download): install it likewise
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || ! command -v apt-get >/dev/null \
		|| [ "$$(id -u)" != 0 ] \
		|| { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || true
	$(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check service search_spaces trainers csf cluster tests bench

clean:
	rm -rf $(VENV) .geonas
