#!/usr/bin/env bash
# Builds the read-only root image of a Debian profile (`debian = { packages = [...] }`): a root
# filesystem from Debian's packages by mmdebstrap, packed as squashfs. The kernel, the initramfs
# and the agent are minimal's (the agent copies itself into the root at boot), so the image does
# not change when they do. Driven by src/vmm/debian-image.ts, which owns the key, the lock and the
# manifest; this script only does the shell work.
#
#   build.sh build --out DIR --suite SUITE --variant VARIANT --apt-cache DIR [--mirror URL]
#                  [--packages "a b c"]
#       Writes DIR/root.sqfs and DIR/packages (name=version, one a line). Downloaded .debs are
#       kept in the apt-cache dir, so a second build with other packages downloads only those.
#
# Every failure prints one line "build.sh: <what> failed: <detail> — <fix>" and exits non-zero.
set -euo pipefail
export LC_ALL=C

die() { echo "build.sh: $*" >&2; exit 1; }
need() {
  command -v "$1" >/dev/null 2>&1 || die "looking for \`$1\` failed: not installed — apt-get install -y $2 (or run scripts/setup.sh)"
}

build() {
  local out="" suite="" variant="" cache="" mirror="" packages=""
  while (($#)); do
    case $1 in
      --out) out=$2; shift 2 ;;
      --suite) suite=$2; shift 2 ;;
      --variant) variant=$2; shift 2 ;;
      --apt-cache) cache=$2; shift 2 ;;
      --mirror) mirror=$2; shift 2 ;;
      --packages) packages=$2; shift 2 ;;
      *) die "parsing arguments failed: unknown option \`$1\` — see the header of $0" ;;
    esac
  done
  [[ -n $out && -n $suite && -n $variant && -n $cache ]] \
    || die "parsing arguments failed: --out, --suite, --variant and --apt-cache are required — see the header of $0"
  need mmdebstrap mmdebstrap
  need mksquashfs squashfs-tools
  [[ $(id -u) == 0 ]] || need unshare util-linux
  mkdir -p "$out" "$cache"

  # A name no list knows fails in a second, not after the essential packages are installed: the
  # host's apt lists answer when they are of the same suite (and know anything at all).
  local host_suite
  host_suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true
  if [[ -n $packages && $host_suite == "$suite" && -n $(apt-cache policy dpkg 2>/dev/null) ]]; then
    local p unknown=()
    for p in $packages; do [[ -n $(apt-cache policy "$p" 2>/dev/null) ]] || unknown+=("$p"); done
    if ((${#unknown[@]})); then
      for p in "${unknown[@]}"; do echo "E: Unable to locate package $p"; done
      die "checking the package names failed: Debian $suite has no ${unknown[*]} — fix the profile's debian.packages"
    fi
  fi

  # Global on purpose: the EXIT trap runs after this function's locals are gone.
  work=$(mktemp -d "$out/.work.XXXXXX")
  trap 'rm -rf "$work"' EXIT

  # 1. The root filesystem. The apt cache goes in before apt runs and comes out after (the
  #    essential packages' too), so later builds reuse every .deb. Daemons are not started in the
  #    chroot (mmdebstrap's policy-rc.d).
  #    dpkg need not fsync (the tree is packed right after) and apt needs no translations.
  local -a args=(--variant="$variant" --format=directory --skip=essential/unlink
    --dpkgopt=force-unsafe-io --aptopt='Acquire::Languages "none"'
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/'
    --setup-hook="sync-in '$cache' /var/cache/apt/archives/"
    --customize-hook="sync-out /var/cache/apt/archives '$cache'"
    --customize-hook='echo provium >"$1/etc/hostname"'
    --customize-hook='printf "127.0.0.1 localhost\n::1 localhost\n" >"$1/etc/hosts"'
    --customize-hook='chroot "$1" dpkg-query -W -f="\${Package}=\${Version}\n" >"$1/.provium-packages"')
  [[ -n $packages ]] && args+=(--include="${packages// /,}")
  echo "mmdebstrap $suite (variant $variant)${packages:+: $packages}"
  local -a target=("$suite" "$work/root")
  [[ -n $mirror ]] && target+=("$mirror")
  mmdebstrap "${args[@]}" "${target[@]}" 2>&1 \
    || die "mmdebstrap failed: see the lines above (a package name Debian does not know shows as \`Unable to locate package\`) — fix the profile's debian.packages"

  # 2. Packed read-only. zstd at level 3 packs in seconds; the guest reads it through the page cache.
  mv "$work/root/.provium-packages" "$out/packages"
  echo "packing $(du -sh "$work/root" | cut -f1) as squashfs"
  mksquashfs "$work/root" "$out/root.sqfs" -comp zstd -Xcompression-level 3 -noappend -no-progress -quiet \
    || die "mksquashfs failed — check squashfs-tools and the free space in $out"
  echo "built $(du -h "$out/root.sqfs" | cut -f1) root.sqfs with $(wc -l <"$out/packages") packages"
}

case ${1:-} in
  build) shift; build "$@" ;;
  *) die "parsing arguments failed: expected \`build\` — see the header of $0" ;;
esac
