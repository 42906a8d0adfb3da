# make install   a venv in .venv with pushsource and its test tools
# make test      the test suite, then mypy, ruff and the import rules (what CI runs)
# make test-fast the unit tests that need no server and no real time, on two cores (< 1 min)
# make station   Icecast on 127.0.0.1:8000 (with its crash fallback) and pushsource
#                streaming ./music to /stream
# make compat    the compatibility tests alone, then the README's table they filled
#                (installs only what the station needs; PORT=8001 for another port)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATION_STAMP := $(VENV)/.station
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
STATION_PACKAGES := icecast2 lame sox libsox-fmt-mp3 ffmpeg libvlc5 vlc-plugin-base libebur128-1
PORT ?= 8000

.PHONY: install test test-fast compat station station-packages

install: $(STAMP)

# The package and its test tools (mypy, ruff, selenium...). An editable
# install compiles no bytecode (a wheel's does): compileall, so that a launch
# under PYTHONDONTWRITEBYTECODE=1 does not compile every module (80 ms here).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[test]'
	$(PY) -m compileall -q pushsource
	touch $@ $(STATION_STAMP)

# The package alone: what `make station` needs, and quick to install.
$(STATION_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e .
	$(PY) -m compileall -q pushsource
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q
	$(VENV)/bin/mypy
	$(VENV)/bin/ruff check pushsource tests benchmarks
	$(VENV)/bin/ruff format --check pushsource tests benchmarks
	$(VENV)/bin/lint-imports

# While working: no real server, browser or real-time wait (the integration
# and slow markers), spread over two processes by pytest-xdist.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not slow" -n 2

# Icecast 2.5.0 and icecast-kh come from ../shared/servers (.ci/build-servers).
compat: $(STAMP)
	PUSHSOURCE_COMPAT_TABLE=compat.md $(PY) -m pytest -q tests/test_compat_e2e.py \
	    tests/test_shoutcast_e2e.py tests/test_listeners_peers_e2e.py
	@cat compat.md

# Only what is missing, so a set-up machine never needs root here.
station-packages:
	@missing=$$(for p in $(STATION_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    $(SUDO) apt-get update && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

# Demo tracks in an empty ./music, icecast2 from icecast.xml (its files in
# run/icecast, or a temp dir when nobody cannot reach the clone), then
# `pushsource stream --fresh`: every run plays from the first track. Ctrl-C
# stops both and exits 0. First, the crash fallback: a copy of icecast.xml
# whose /stream falls back to a file of silence in the stream's format, written
# into a webroot of its own (run/icecast/web), so a listener stays through a
# crash of pushsource (README: Listeners through a restart).
station: station-packages $(STATION_STAMP)
	@$(PY) -m pushsource.ops.icecastconf --template icecast.xml --mount /stream \
	    --samplerate 44100 --channels 2 --webroot run/icecast/web --out run/icecast/station.xml
	@$(PY) -m pushsource.ops.trial station --config run/icecast/station.xml --port $(PORT) \
	    --workdir run/icecast music
