#!/usr/bin/env bash
# Installs what ckpt needs to build and test, if missing: the .NET 10 SDK and gcc.
set -euo pipefail
need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v setsid >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v ip >/dev/null 2>&1 || need+=(iproute2)   # tests in a network namespace of their own bring lo up
if ! command -v dotnet >/dev/null 2>&1 || ! dotnet --list-sdks 2>/dev/null | grep -q '^10\.'; then
  need+=(dotnet-sdk-10.0)
fi
if (( ${#need[@]} )); then
  echo "install-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >&2
fi
# nftables and iptables (nft backend) for the test of a network namespace's firewall; the test is skipped
# without them, so a machine that cannot install them still runs the rest
if ! command -v nft >/dev/null 2>&1 || ! command -v iptables >/dev/null 2>&1; then
  echo "install-deps: installing nftables iptables" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq nftables iptables >&2 || { apt-get update -qq >&2 && apt-get install -y -qq nftables iptables >&2; }; } ||
    echo "install-deps: nftables/iptables not installed (the firewall test will be skipped)" >&2
fi
