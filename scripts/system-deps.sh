#!/usr/bin/env bash
# System packages the project needs: gcc and GMP headers (libp2p's fastecdsa builds from source).
# Installs them with apt-get when running as root on Debian/Ubuntu; otherwise says what to install.
# Optional: chromium, for the test that loads `quinkgl monitor --web` in a headless browser (skipped without it);
# installed alongside when we can, otherwise only mentioned.
set -euo pipefail
missing=()
optional=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -f /usr/include/gmp.h ] || [ -f /usr/include/x86_64-linux-gnu/gmp.h ] || [ -f /usr/include/aarch64-linux-gnu/gmp.h ] || missing+=(libgmp-dev)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || optional+=(chromium)
[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${missing[*]} ${optional[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ ${#optional[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${optional[@]}" >/dev/null \
      || echo "could not install ${optional[*]}: the headless-browser test will be skipped" >&2
  fi
elif [ ${#missing[@]} -gt 0 ]; then
  echo "missing system packages: ${missing[*]} — install them (e.g. sudo apt-get install ${missing[*]}) and retry" >&2
  exit 1
else
  echo "optional: ${optional[*]} is not installed (sudo apt-get install ${optional[*]}); the headless-browser test will be skipped" >&2
fi
