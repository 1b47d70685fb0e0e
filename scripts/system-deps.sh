#!/usr/bin/env bash
# System packages the project needs: gcc and GMP headers (libp2p's fastecdsa builds from source).
# Installs them with apt-get when running as root on Debian/Ubuntu; otherwise says what to install.
# Optional, for the multi-host tests in tests/network (network namespaces; they skip without these): iproute2
# (`ip`) and nftables (`nft`, the NAT routers). Installed here only when running as root with apt-get.
set -euo pipefail
optional=()
command -v ip >/dev/null 2>&1 || optional+=(iproute2)
command -v nft >/dev/null 2>&1 || optional+=(nftables)
if [ ${#optional[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages for tests/network: ${optional[*]}" >&2
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${optional[@]}" >/dev/null || \
    echo "could not install ${optional[*]}: the tests in tests/network will be skipped" >&2
fi
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -f /usr/include/gmp.h ] || [ -f /usr/include/x86_64-linux-gnu/gmp.h ] || [ -f /usr/include/aarch64-linux-gnu/gmp.h ] || missing+=(libgmp-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing system packages: ${missing[*]} — install them (e.g. sudo apt-get install ${missing[*]}) and retry" >&2
  exit 1
fi
