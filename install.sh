#!/usr/bin/env bash
# Install packrun into ./.venv (the README's first command; .ci/run uses it too).
#
#   bash install.sh          packrun and its dependencies (mindspore, numpy<2, matplotlib, ...)
#   bash install.sh --test   the same plus the test tools (pytest, psutil)
#
# Both also build the CPU path's native kernels with g++ (installed with apt-get when root and
# missing).
#
# Debian 12 / Ubuntu 24.04 refuse `pip install` into the system Python (PEP 668,
# "externally-managed-environment"), so packrun gets a virtual environment of its own, made with
# /usr/bin/python3 (or $PYTHON). When that Python cannot make one (Debian ships `venv` without
# ensurepip unless python3-venv is installed), python3-venv is installed with apt-get, which
# needs root: run as root, or install python3-venv yourself first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

extras=""
case "${1:-}" in
  "") ;;
  --test) extras="[test]" ;;
  *) echo "usage: bash install.sh [--test]" >&2; exit 2 ;;
esac

python="${PYTHON:-/usr/bin/python3}"
if [ ! -x "$python" ]; then
  python="$(command -v python3 || true)"
  [ -n "$python" ] || { echo "install.sh: no python3 found; install Python 3.11 (apt-get install python3)" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "install.sh: $python cannot create a virtual environment (python3-venv is missing);" >&2
      echo "  run as root, or first: sudo apt-get install python3-venv" >&2
      exit 1
    fi
    echo "== apt: python3-venv (for $python)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  echo "== venv: .venv (from $python)"
  rm -rf .venv
  "$python" -m venv .venv
fi

# The installer is uv (https://docs.astral.sh/uv/), which pip puts into .venv first: it downloads,
# unpacks and compiles packrun's 2.9 GB in parallel (27 s from nothing, against pip's 54 s from
# its own warm cache; measured 2026-12-07 on 2 cores). uv reads no pip configuration, so where
# pip is pointed at an index of its own (a mirror: PIP_INDEX_URL, or index-url in pip.conf)
# packrun installs with pip, as it does with PACKRUN_INSTALLER=pip and whenever uv fails.
installer="${PACKRUN_INSTALLER:-uv}"
if [ "$installer" = uv ] && .venv/bin/python -m pip config list 2>/dev/null | grep -q '\.index-url='; then
  installer="pip (pip is set to an index of its own, which uv would not read)"
fi
what="packrun$extras and its dependencies into .venv (the first time downloads mindspore and the rest: 2.9 GB installed)"
if [ "$installer" = uv ]; then
  echo "== uv: $what"
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.10"; then
    installer="pip (pip could not install uv)"
  elif ! .venv/bin/uv pip install -q --python .venv/bin/python --compile-bytecode -e ".$extras"; then
    installer="pip (uv failed, above)"
  fi
fi
if [ "$installer" != uv ]; then
  echo "== $installer: $what"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras"
fi
# The CPU path's native Winograd kernels (src/native/winograd.cc) need g++; without it packrun
# still works, with slower 3x3 convolutions on CPU.
if ! command -v g++ >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== apt: g++ (for the native CPU kernels)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends g++ >/dev/null
  else
    echo "install.sh: no g++: CPU runs use the slower pure-MindSpore convolutions (sudo apt-get install g++, then rerun)" >&2
  fi
fi
if command -v g++ >/dev/null 2>&1; then
  echo "== native CPU kernels: $(.venv/bin/python -m src.native.kernels)"
fi
# The checkout's own modules as bytecode (an editable install leaves them as source): where
# PYTHONDONTWRITEBYTECODE is set (container images often set it), every packrun process and
# worker compiled the ones it imports from source again (0.2 s of CPU for all of them).
PYTHONDONTWRITEBYTECODE='' .venv/bin/python -m compileall -q launcher src >/dev/null
if [ -n "$extras" ]; then
  # pytest rewrites each test module's asserts and keeps the result in __pycache__; where
  # PYTHONDONTWRITEBYTECODE is set (container images often set it) it cannot, so every pytest
  # process rewrote all the test modules again (about 2 s of CPU each: the collection took 5 s
  # instead of 3 s in each of the unit tier's four workers). Written once here; pytest reads
  # them whatever that variable says, and rewrites a module that changed.
  echo "== pytest: the test modules' rewritten asserts, kept in their __pycache__"
  PYTHONDONTWRITEBYTECODE='' .venv/bin/python -m pytest --collect-only -q -p no:cacheprovider >/dev/null
fi
echo "== installed: $(pwd)/.venv/bin/packrun  (source .venv/bin/activate puts packrun on PATH)"
