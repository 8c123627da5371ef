# allscope: the two set-up commands are `make run` and `make test` (see README.md).
# Both create their own virtualenv in .venv; nothing is downloaded at run time.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: run test bench screenshots system-deps clean-venv arm64-check

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

# Debian packages the tests need: libusb (loaded by tflite-support's writer),
# chromium (browser tests drive it with Playwright; no browser download),
# the PDF report's fonts (DejaVu, Noto and WenQuanYi: names in any script, see
# device/services/pdf_fonts.py; install.sh installs the same), poppler-utils (pdftoppm renders
# the PDF report's pages for `make screenshots`), mosquitto (the sync tests
# run a real TLS broker), postgresql (the central database is tested on it) and
# openssl (certificate checks).
system-deps:
	@missing=""; \
	ldconfig -p | grep -q 'libusb-1.0.so.0' || missing="$$missing libusb-1.0-0"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing="$$missing fonts-dejavu-core"; \
	[ -f /usr/share/fonts/truetype/noto/NotoSansThai-Regular.ttf ] || missing="$$missing fonts-noto-core"; \
	[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing="$$missing fonts-wqy-microhei"; \
	command -v pdftoppm >/dev/null || missing="$$missing poppler-utils"; \
	[ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "note: install$$missing (sudo apt-get install$$missing); the tests that need them will skip"; fi

# The web UI on http://127.0.0.1:8080 with the replay camera over the bundled
# demo frames; data (records, images, secret key) in ./var.
run: $(VENV)/.device-installed
	$(VENV)/bin/allscope serve --data-dir var --host 127.0.0.1 --port 8080

test: $(VENV)/.test-installed
	$(VENV)/bin/pytest

# Every benchmark, median and min-max over 3 runs, into bench-results/bench.json and bench.md
# (make bench BENCH_ARGS="--quick" or "--repeats 5"). The sync figures need mosquitto.
BENCH_ARGS ?=
bench: $(VENV)/.device-installed
	$(VENV)/bin/allscope bench all --out bench-results $(BENCH_ARGS)

# The README's screenshots (webui/screenshots/): the review page at 800x480 and page 1 of the PDF report, of a
# demo sample analysed from the shipped demo frames by a real `allscope serve` on a temporary data directory.
screenshots: $(VENV)/.test-installed
	$(PY) -m webui.screenshots --out webui/screenshots

# allscope on arm64 under qemu-user emulation, from this x86_64 host (root; long, so not part of `make test`): an
# arm64 Debian bookworm root by debootstrap (outside the repository), a clean clone of HEAD in it, this file's
# .venv/.device-installed step there, then `allscope analyze --json` on the demo (and ALL-IDB1) frames there and
# here, compared by firmware_config/arm64/compare_analyze.py (make arm64-check ARM64_ARGS="--root DIR").
ARM64_ARGS ?=
arm64-check: $(VENV)/.device-installed
	firmware_config/arm64/verify.sh --host-python $(PY) $(ARM64_ARGS)

clean-venv:
	rm -rf $(VENV)
