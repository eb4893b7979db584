#!/usr/bin/env bash
# make test-all: the test suite on every CPython 3.10-3.13 found on this machine (pyenv
# provides them on this machine image); says which versions it skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
ran=()
skipped=()
for minor in 3.10 3.11 3.12 3.13; do
  python=""
  if command -v pyenv >/dev/null 2>&1; then
    version=$(pyenv versions --bare 2>/dev/null | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n 1)
    [ -n "$version" ] && python="$(pyenv prefix "$version")/bin/python"
  fi
  [ -z "$python" ] && python=$(command -v "python$minor" || true)
  if [ -z "$python" ] || [ ! -x "$python" ]; then
    skipped+=("$minor (not installed)")
    continue
  fi
  venv=".venv-py$minor"
  stale=0
  for source in pyproject.toml setup.py src/wavegate/transport/_picows_listener.pyx; do
    [ "$source" -nt "$venv/.installed" ] && stale=1  # the compiled listener is rebuilt too
  done
  if [ ! -f "$venv/.installed" ] || [ $stale = 1 ]; then
    "$python" -m venv "$venv" && "$venv/bin/pip" install -q --upgrade pip \
      && "$venv/bin/pip" install -q -e '.[dev]' && touch "$venv/.installed"
  fi
  echo "== CPython $("$venv/bin/python" -c 'import platform; print(platform.python_version())')"
  if "$venv/bin/pytest" -q -p no:cacheprovider; then
    ran+=("$minor: passed")
  else
    ran+=("$minor: FAILED")
    status=1
  fi
done
echo "== summary"
for line in "${ran[@]}"; do echo "ran     $line"; done
for line in "${skipped[@]+"${skipped[@]}"}"; do echo "skipped $line"; done
exit $status
