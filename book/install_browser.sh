#!/usr/bin/env bash
# The browser for tests/test_book.py (issue 22): Debian's Chromium (the system package: Playwright's own browser
# download needs the internet) and Playwright from PyPI to drive it. Installs where it can (root and apt-get);
# elsewhere prints how, and exits 0 so that a setup does not stop for an optional test (the test then skips).
# Used by: `make browser`. Run: bash book/install_browser.sh   (PIP=path/to/pip to choose the environment)
set -uo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}

have_browser() { command -v chromium || command -v chromium-browser || command -v google-chrome; }

if [ -x "$PIP" ] || command -v "$PIP" >/dev/null; then
    if ! "$PIP" show -q playwright >/dev/null 2>&1; then
        echo "== installing Playwright (the book extra) with $PIP"
        "$PIP" install --disable-pip-version-check -q -e '.[book]' 2>&1 \
            | grep -v "is ignored: it is neither a file nor a directory" || true
    fi
else
    echo "no $PIP: run 'make setup' first, then 'make browser' (or: pip install -e '.[book]')"
fi

if browser=$(have_browser); then
    echo "browser: $browser ($("$browser" --version 2>/dev/null | head -1))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Debian's chromium (apt-get; about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; then
        browser=$(have_browser) && echo "browser: $browser ($("$browser" --version 2>/dev/null | head -1))"
    else
        echo "apt-get could not install chromium; tests/test_book.py's browser test will skip"
    fi
else
    cat <<'EOF'
No Chromium here, and no root with apt-get to install it: tests/test_book.py's browser test will skip.
To run it, install a Chromium and point the test at it if it is not on PATH as chromium/chromium-browser/google-chrome:
  Debian/Ubuntu:  sudo apt-get install chromium        (Ubuntu: chromium-browser, or Google Chrome's .deb)
  macOS:          brew install --cask chromium          then  export BAC_CHROMIUM="/Applications/Chromium.app/Contents/MacOS/Chromium"
  with internet:  .venv/bin/python -m playwright install chromium   (Playwright's own build; the test finds it)
EOF
fi
exit 0
