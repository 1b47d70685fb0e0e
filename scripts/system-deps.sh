#!/usr/bin/env bash
# System packages the project needs, installed with apt-get when running as root on Debian/Ubuntu; otherwise this
# says what to install.
#   required: gcc and the GMP headers (libp2p's fastecdsa builds from source)
#   optional: chromium (the test that loads `quinkgl monitor --web` in a headless browser), iproute2 and nftables
#             (the multi-host tests in tests/network: network namespaces and NAT routers). Tests that need an
#             optional package skip with a reason without it.
set -euo pipefail
missing=()
optional=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -f /usr/include/gmp.h ] || [ -f /usr/include/x86_64-linux-gnu/gmp.h ] || [ -f /usr/include/aarch64-linux-gnu/gmp.h ] || missing+=(libgmp-dev)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || optional+=(chromium)
command -v ip >/dev/null 2>&1 || optional+=(iproute2)
command -v nft >/dev/null 2>&1 || optional+=(nftables)
[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${missing[*]} ${optional[*]}" >&2
  apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  for package in "${optional[@]}"; do
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null \
      || echo "could not install $package: the tests that need it will be skipped" >&2
  done
elif [ ${#missing[@]} -gt 0 ]; then
  echo "missing system packages: ${missing[*]} — install them (e.g. sudo apt-get install ${missing[*]}) and retry" >&2
  exit 1
else
  echo "optional: ${optional[*]} not installed (sudo apt-get install ${optional[*]}); the tests that need them will be skipped" >&2
fi
