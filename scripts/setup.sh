#!/usr/bin/env bash
# Prepares a Debian 12 machine (or CI) to build and run Provium. Idempotent and quick when
# everything is already there:
#   1. Debian packages (apt-get, as root; otherwise prints the command and exits 2)
#   2. npm ci, only when node_modules is missing or older than package-lock.json or a patches/ file
#   3. npm run build (tsc, make -C agent, QEMU's preload), always: quick when nothing changed
#   4. provium image build (rebuilds the guest image only when an input changed)
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc and make: musl-gcc wraps gcc, and fresh Debian images have neither.
kPackages=(qemu-system-x86 qemu-utils busybox-static musl-tools gcc make cpio lz4 kmod zstd)
# Debian profiles: the root filesystem from Debian's packages, packed read-only.
kPackages+=(mmdebstrap squashfs-tools)
# The report tests: the progress display in a real terminal (tmux), the HTML report in a real browser.
kPackages+=(tmux chromium)
say() { echo "setup: $*"; }

# 1. Debian packages. dpkg-query is fast; apt-get runs only when something is missing.
installed=" $(dpkg-query -W -f='${Package}=${db:Status-Status} ' "${kPackages[@]}" 2>/dev/null || true)"
missing=()
for pkg in "${kPackages[@]}"; do
  [[ $installed == *" $pkg=installed "* ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
  if [[ $(id -u) != 0 ]]; then
    say "missing Debian packages: ${missing[*]}"
    say "run as root: $cmd"
    exit 2
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  say "installed ${missing[*]}"
fi

# 2. Node dependencies.
# npm ci also applies patches/ (postinstall: patch-package), so a changed patch reinstalls too.
newer_patch=$(find patches -name '*.patch' -newer node_modules 2>/dev/null | head -1 || true)
if [[ ! -d node_modules || package-lock.json -nt node_modules || -n "$newer_patch" ]]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund
  # npm ci recreates node_modules; touch it so the check above stays false.
  touch node_modules
fi

# 3. TypeScript and the agent.
say "building (tsc, agent, QEMU preload)"
npm run -s build

# 4. The guest image of the built-in profile.
node dist/src/cli/main.js image build
