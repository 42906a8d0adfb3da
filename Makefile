# make install   a venv in .venv with pushsource and its test tools
# make test      the test suite, then mypy, ruff and the import rules (what CI runs)
# make station   Icecast on 127.0.0.1:8000 and pushsource streaming ./music to /stream

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
STATION_PACKAGES := icecast2 lame sox libsox-fmt-mp3 ffmpeg libvlc5 vlc-plugin-base
STATION_URL := icecast://source:hackme@127.0.0.1:8000/stream

.PHONY: install test station station-packages

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[test]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q
	$(VENV)/bin/mypy
	$(VENV)/bin/ruff check pushsource tests
	$(VENV)/bin/lint-imports

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

# Icecast runs in the background for as long as pushsource does; the traps
# stop it however pushsource ends (Ctrl-C included: sh would die of SIGINT
# without running an EXIT trap, and the background runner ignores SIGINT).
station: station-packages $(STAMP)
	@if [ -z "$$(ls -A music 2>/dev/null)" ]; then \
	    echo "making three demo tracks in ./music"; \
	    $(PY) -c 'from pathlib import Path; from tests.support.media import make_titled_tracks; \
	make_titled_tracks(Path("music"), [("pushsource", "Demo Tone"), ("Sigur Rós", "Ágætis tónn"), ("東京", "デモ 🎶")], seconds=20)'; \
	fi
	@mkdir -p run
	@$(PY) -m tests.support.icecast --port 8000 --workdir run/icecast & icecast=$$!; \
	trap 'kill $$icecast 2>/dev/null; wait $$icecast' EXIT; trap 'exit 130' INT TERM; \
	$(PY) -c 'from tests.support.icecast import wait_for_status; wait_for_status("http://127.0.0.1:8000", 15)' \
	    && kill -0 $$icecast || exit 1; \
	echo "listen at http://127.0.0.1:8000/stream; Ctrl-C stops"; \
	$(VENV)/bin/pushsource stream music $(STATION_URL)
