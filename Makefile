# allscope: the two set-up commands are `make run` and `make test` (see README.md).
# Both create their own virtualenv in .venv; nothing is downloaded at run time.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: run test bench system-deps clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.device-installed: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[device]'
	touch $@

# tflite-support 0.4.4 pins protobuf<4, which tensorflow 2.21 cannot use: it
# is installed without its pins (the metadata writer works with newer protobuf).
$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(MAKE) system-deps
	$(PIP) install --quiet -e '.[device,train,dev]'
	$(PIP) install --quiet --no-deps 'tflite-support==0.4.4'
	touch $@

# Debian packages the tests need: libusb (loaded by tflite-support's writer).
system-deps:
	@if ldconfig -p | grep -q 'libusb-1.0.so.0'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	else echo "note: install libusb-1.0-0 (sudo apt-get install libusb-1.0-0) for the metadata writer"; fi

run: $(VENV)/.device-installed
	$(VENV)/bin/allscope analyze device/demo

test: $(VENV)/.test-installed
	$(VENV)/bin/pytest

bench: $(VENV)/.device-installed
	$(VENV)/bin/allscope bench

clean-venv:
	rm -rf $(VENV)
