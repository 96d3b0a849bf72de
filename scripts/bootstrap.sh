#!/usr/bin/env bash
# One-shot set-up on a fresh Debian 12 machine (run as root, or with sudo available):
# system packages for FFCV, Slurm and PostgreSQL, a virtual environment, and the project.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TP_VENV:-.venv}
PY=${TP_PYTHON:-python3}

need_apt=()
# chromium + chromium-driver: the HTML report's tests open it in a real headless browser.
for pkg in libopencv-dev libturbojpeg0-dev pkg-config slurm-wlm slurmdbd munge mariadb-server postgresql \
           chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "[bootstrap] apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.tp-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ examples/tp_example/pyproject.toml -nt "$stamp" ]; then
  echo "[bootstrap] installing torch (from local disk where available) and the project"
  "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
  # ffcv builds from source against OpenCV/turbojpeg; its build needs numpy and cython at hand.
  "$VENV/bin/pip" install -q numpy cython pkgconfig
  "$VENV/bin/pip" install -q --no-build-isolation ffcv==1.0.2
  "$VENV/bin/pip" install -q -e ".[test,check,notebook]"
  # The example plugin (a lab's model, criterion and data set, docs/extending.md): its tests
  # launch sweeps that name it, and its method reaches turboprune through an entry point.
  "$VENV/bin/pip" install -q -e examples/tp_example
  touch "$stamp"
fi
echo "[bootstrap] ready: $VENV"
