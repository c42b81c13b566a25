#!/usr/bin/env bash
# Builds the guest image of the built-in profile `minimal`: Debian's cloud kernel (PVH vmlinux +
# vmlinuz), the virtio modules it lacks built in, Debian's busybox-static and the Provium agent,
# packed as a newc cpio.gz. Driven by src/vmm/image.ts, which decides staleness and writes the
# manifest; this script only does the shell work.
#
#   build.sh resolve
#       Prints the concrete package versions the build would use, as key=value lines:
#       kernel_pkg, kernel_version, busybox_version.
#   build.sh build --out DIR --agent PATH --downloads DIR [--kernel-pkg P --kernel-version V
#                  --busybox-version V]
#       Writes DIR/{vmlinux,vmlinuz,initrd.cpio.gz,agent-overlay.cpio.gz,build-info}.
#       DIR must not exist or be empty. Downloaded .debs are kept in the downloads dir.
#
# Every failure prints one line "build.sh: <what> failed: <detail> — <fix>" and exits non-zero.
set -euo pipefail
export LC_ALL=C

# Modules the agent loads (finit_module, in this order after dependency expansion). None of them
# is built into Debian's cloud kernel (checked against modules.builtin below). `button` (the ACPI
# power button, reported as KEY_POWER) and `evdev` (its /dev/input/eventN) let the standalone
# agent power off on QMP system_powerdown. `pvpanic-mmio` (ACPI QEMU0001, QEMU's `-device pvpanic`)
# turns a kernel panic into QMP GUEST_PANICKED, so the host can name it.
kModules=(virtio_pci virtio_console virtio_blk virtio_net virtio-rng qemu_fw_cfg button evdev pvpanic-mmio)
# Loaded only for a read-only root image under an overlay (provium.root=, Debian profiles): listed
# in provium.root.load, so a minimal boot does not pay for them.
kRootModules=(squashfs overlay)
kMetaPkg=linux-image-cloud-amd64
kBusyboxPkg=busybox-static
# Fixed mtime for every file in the cpio, so the same inputs give the same initrd bytes.
kEpoch=946684800

die() { echo "build.sh: $*" >&2; exit 1; }
need() {
  command -v "$1" >/dev/null 2>&1 || die "looking for \`$1\` failed: not installed — apt-get install -y $2 (or run scripts/setup.sh)"
}

# 1. Resolution: meta package -> concrete kernel package and version, busybox-static version.
#    One apt-cache call (≈0.7 s: this host has no pkgcache.bin). Runs `apt-get update` once when
#    the lists are empty and we are root.
resolve() {
  need apt-cache apt
  local out
  out=$(apt-cache show --no-all-versions "$kMetaPkg" "$kBusyboxPkg" 2>&1) || true
  if ! grep -q "^Package: $kMetaPkg\$" <<<"$out" || ! grep -q "^Package: $kBusyboxPkg\$" <<<"$out"; then
    if [[ $(id -u) == 0 ]]; then
      echo "build.sh: apt lists do not know $kMetaPkg/$kBusyboxPkg; running apt-get update" >&2
      apt-get update -qq >&2 || die "apt-get update failed — check the network and /etc/apt/sources.list"
      out=$(apt-cache show --no-all-versions "$kMetaPkg" "$kBusyboxPkg" 2>&1) || true
    fi
    grep -q "^Package: $kMetaPkg\$" <<<"$out" \
      || die "resolving $kMetaPkg with apt-cache failed: ${out%%$'\n'*} — run \`apt-get update\` as root (Debian 12 main must be in the sources)"
  fi
  # The meta package depends on exactly one concrete image: "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)".
  local dep
  dep=$(awk -v p="$kMetaPkg" '/^Package: /{cur=$2} cur==p && /^Depends: /{sub(/^Depends: /,""); print; exit}' <<<"$out")
  [[ $dep =~ (linux-image-[0-9][^ ,]*-cloud-amd64)\ \(=\ ([^\)]+)\) ]] \
    || die "resolving $kMetaPkg failed: unexpected Depends line \`$dep\` — report this (expected linux-image-<abi>-cloud-amd64 (= version))"
  echo "kernel_pkg=${BASH_REMATCH[1]}"
  echo "kernel_version=${BASH_REMATCH[2]}"
  local bb
  bb=$(awk -v p="$kBusyboxPkg" '/^Package: /{cur=$2} cur==p && /^Version: /{print $2; exit}' <<<"$out")
  [[ -n $bb ]] || die "resolving $kBusyboxPkg failed: no Version field — run \`apt-get update\` as root"
  echo "busybox_version=$bb"
}

# download PKG VERSION DIR -> prints the path of the .deb (cached under DIR by name and version).
download() {
  local pkg=$1 ver=$2 dir=$3
  local deb="$dir/${pkg}_${ver//:/%3a}_amd64.deb"
  if [[ -s $deb ]] && dpkg-deb --info "$deb" >/dev/null 2>&1; then
    echo "$deb"; return
  fi
  local tmp
  tmp=$(mktemp -d "$dir/.dl.XXXXXX")
  # apt drops privileges to _apt for downloads; a private temp dir is not readable by _apt.
  chmod 755 "$tmp"
  local err
  if ! err=$(cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver" 2>&1 >/dev/null); then
    rm -rf "$tmp"
    die "apt-get download $pkg=$ver failed: $(tail -n1 <<<"$err") — run \`apt-get update\` as root and retry (the version may have left the mirror)"
  fi
  local got
  got=$(ls "$tmp"/*.deb 2>/dev/null | head -n1)
  [[ -n $got ]] || { rm -rf "$tmp"; die "apt-get download $pkg=$ver failed: no .deb produced — run \`apt-get update\` as root"; }
  mv -f "$got" "$deb"
  rm -rf "$tmp"
  echo "$deb"
}

# Commands the seeds' examples use that Debian's busybox-static has no applet for, as small sh
# scripts (an applet of the same name, in a later busybox, wins: the links are made first).
install_shims() {
  local root=$1
  [[ -e $root/usr/bin/printenv ]] || cat >"$root/usr/bin/printenv" <<'SH'
#!/bin/sh
# printenv [NAME...]: the environment, or the values of NAMEs (exit 1 when one is unset).
[ $# -eq 0 ] && exec env
rc=0
for name in "$@"; do
  case $name in ''|*[!A-Za-z0-9_]*|[0-9]*) rc=1; continue ;; esac
  if eval "[ \"\${$name+set}\" = set ]"; then eval "printf '%s\n' \"\$$name\""; else rc=1; fi
done
exit $rc
SH
  [[ -e $root/usr/bin/pgrep ]] || cat >"$root/usr/bin/pgrep" <<'SH'
#!/bin/sh
# pgrep [-f] [-x] [-l] PATTERN, pkill [-SIGNAL] [-f] [-x] PATTERN: PATTERN is an extended regular
# expression over the process name (with -f: the whole command line). Exit 1 when none matched.
me=${0##*/} full=0 exact=0 list=0 sig=TERM
while [ $# -gt 1 ]; do
  case $1 in
    -f) full=1 ;; -x) exact=1 ;; -l) list=1 ;;
    -[0-9]*|-[A-Z]*) sig=${1#-} ;;
    --) shift; break ;;
    *) break ;;
  esac
  shift
done
[ $# -eq 1 ] || { echo "usage: $me [-f] [-x] PATTERN" >&2; exit 2; }
flags=-qE; [ $exact = 1 ] && flags=-qxE
rc=1
for dir in /proc/[0-9]*; do
  pid=${dir#/proc/}
  [ "$pid" = $$ ] && continue
  if [ $full = 1 ]; then what=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null); what=${what% }
  else what=$(cat "$dir/comm" 2>/dev/null); fi
  [ -n "$what" ] && printf '%s\n' "$what" | grep $flags -- "$1" || continue
  rc=0
  if [ "$me" = pkill ]; then kill -s "$sig" "$pid" 2>/dev/null
  elif [ $list = 1 ]; then echo "$pid $what"
  else echo "$pid"; fi
done
exit $rc
SH
  [[ -e $root/usr/bin/pkill ]] || ln -s pgrep "$root/usr/bin/pkill"
  [[ -e $root/usr/bin/ss ]] || cat >"$root/usr/bin/ss" <<'SH'
#!/bin/sh
# ss: busybox has netstat, whose -l -t -u -x -n -p -a mean what they mean to ss.
exec netstat "$@"
SH
  chmod 0755 "$root/usr/bin/printenv" "$root/usr/bin/pgrep" "$root/usr/bin/ss"
}

build() {
  local out="" agent="" dl="" kpkg="" kver="" bbver=""
  while (($#)); do
    case $1 in
      --out) out=$2; shift 2 ;;
      --agent) agent=$2; shift 2 ;;
      --downloads) dl=$2; shift 2 ;;
      --kernel-pkg) kpkg=$2; shift 2 ;;
      --kernel-version) kver=$2; shift 2 ;;
      --busybox-version) bbver=$2; shift 2 ;;
      *) die "parsing arguments failed: unknown option \`$1\` — see the header of $0" ;;
    esac
  done
  [[ -n $out && -n $agent && -n $dl ]] || die "parsing arguments failed: --out, --agent and --downloads are required — see the header of $0"
  for t in "dpkg-deb:dpkg" "depmod:kmod" "modprobe:kmod" "cpio:cpio" "lz4:lz4" "gzip:gzip" "apt-get:apt"; do
    need "${t%%:*}" "${t#*:}"
  done
  [[ -f $agent && -x $agent ]] || die "reading the agent binary $agent failed: missing or not executable — run \`make -C agent\` (or \`npm run build\`)"
  mkdir -p "$out" "$dl"
  if [[ -z $kpkg || -z $kver || -z $bbver ]]; then
    local r; r=$(resolve)
    kpkg=$(sed -n 's/^kernel_pkg=//p' <<<"$r"); kver=$(sed -n 's/^kernel_version=//p' <<<"$r")
    bbver=$(sed -n 's/^busybox_version=//p' <<<"$r")
  fi

  # Global on purpose: the EXIT trap runs after this function's locals are gone.
  work=$(mktemp -d "$out/.work.XXXXXX")
  trap 'rm -rf "$work"' EXIT

  # 2. Download and unpack the kernel package and busybox-static (never installed on the host).
  echo "downloading $kpkg $kver and $kBusyboxPkg $bbver"
  local kdeb bbdeb
  kdeb=$(download "$kpkg" "$kver" "$dl")
  bbdeb=$(download "$kBusyboxPkg" "$bbver" "$dl")
  dpkg-deb -x "$kdeb" "$work/kernel" || { rm -f "$kdeb"; die "dpkg-deb -x $kdeb failed — the cached .deb was removed; run the build again"; }
  dpkg-deb -x "$bbdeb" "$work/busybox" || { rm -f "$bbdeb"; die "dpkg-deb -x $bbdeb failed — the cached .deb was removed; run the build again"; }

  local release
  release=$(ls "$work/kernel/lib/modules" 2>/dev/null | head -n1)
  [[ -n $release && -f $work/kernel/boot/vmlinuz-$release ]] \
    || die "unpacking $kpkg failed: no /boot/vmlinuz-<release> with a matching /lib/modules/<release> — report this package layout"
  echo "kernel release $release"

  # 3. vmlinuz as shipped, and the uncompressed vmlinux ELF for PVH boot (scripts/extract-vmlinux:
  #    find the legacy LZ4 frame magic 02 21 4c 18 and decompress from there; lz4 exits 1 on the
  #    trailing bytes after the payload, so judge by the ELF magic instead of the exit code).
  cp "$work/kernel/boot/vmlinuz-$release" "$out/vmlinuz"
  local pos found=""
  for pos in $(grep -aboP '\x02\x21\x4c\x18' "$out/vmlinuz" | cut -d: -f1 || true); do
    tail -c +$((pos + 1)) "$out/vmlinuz" | lz4 -dc >"$out/vmlinux" 2>/dev/null || true
    if [[ $(head -c4 "$out/vmlinux" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then found=$pos; break; fi
  done
  [[ -n $found ]] || die "extracting vmlinux from vmlinuz failed: no LZ4 payload that decompresses to an ELF — the kernel must be LZ4-compressed (CONFIG_KERNEL_LZ4) and lz4 installed (apt-get install lz4)"

  # 4. Modules: dependency order from modprobe on the full tree, keeping what is not built in.
  local kroot="$work/kernel"
  depmod -b "$kroot" "$release" || die "depmod -b on the unpacked kernel failed — check kmod (apt-get install kmod)"
  # module_order NAME... -> appends to `order` every module file (deps first) not already there.
  module_order() {
    local m line path deps
    for m in "$@"; do
      deps=$(modprobe -d "$kroot" -S "$release" --show-depends "$m" 2>&1) \
        || die "resolving module $m failed: $deps — the kernel package changed its module set; update kModules in $0"
      while read -r line; do
        [[ $line == insmod\ * ]] || continue
        path=${line#insmod }; path=${path%% *}; path=${path#"$kroot/lib/modules/$release/"}
        local seen=0 p
        for p in "${order[@]}"; do [[ $p == "$path" ]] && seen=1; done
        ((seen)) || order+=("$path")
      done <<<"$deps"
    done
  }
  local -a order=()
  module_order "${kModules[@]}"
  local nboot=${#order[@]}
  module_order "${kRootModules[@]}"
  local -a boot_order=("${order[@]:0:nboot}") root_order=("${order[@]:nboot}")
  echo "modules (${#order[@]}): ${order[*]##*/}"

  # 5. The initramfs tree.
  local root="$work/root"
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,mnt,var/tmp,lib/modules/$release}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  install -m 0755 "$work/busybox/bin/busybox" "$root/bin/busybox"
  local applet
  while read -r applet; do
    [[ -n $applet && $applet != bin/busybox ]] || continue
    mkdir -p "$root/$(dirname "$applet")"
    [[ -e $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
  done < <("$root/bin/busybox" --list-full)
  [[ -L $root/bin/sh ]] || die "creating busybox applet links failed: no bin/sh in \`busybox --list-full\` — check the busybox-static package"
  install_shims "$root"
  install -m 0755 "$agent" "$root/sbin/provium-agent"
  for path in "${order[@]}"; do
    mkdir -p "$root/lib/modules/$release/$(dirname "$path")"
    cp "$kroot/lib/modules/$release/$path" "$root/lib/modules/$release/$path"
  done
  cp "$kroot/lib/modules/$release"/modules.{builtin,builtin.modinfo,order} "$root/lib/modules/$release/"
  depmod -b "$root" "$release" || die "depmod -b on the initramfs failed — check kmod"
  printf '%s\n' "${boot_order[@]}" >"$root/lib/modules/provium.load"
  printf '%s\n' "${root_order[@]}" >"$root/lib/modules/provium.root.load"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  echo provium >"$root/etc/hostname"
  # The kernel's built-in default initramfs already has /dev/console; add it too when we can, so
  # the image does not depend on CONFIG_INITRAMFS_SOURCE being empty.
  mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

  pack() { # pack DIR OUTFILE
    find "$1" -exec touch -h -d "@$kEpoch" {} +
    (cd "$1" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$2"
  }
  pack "$root" "$out/initrd.cpio.gz" || die "packing the initramfs with cpio failed — check cpio and gzip"

  # 6. The agent overlay for other profiles (inject_agent): just the agent binary.
  local ov="$work/overlay"
  mkdir -p "$ov/sbin"
  install -m 0755 "$agent" "$ov/sbin/provium-agent"
  pack "$ov" "$out/agent-overlay.cpio.gz" || die "packing the agent overlay failed — check cpio and gzip"

  {
    echo "kernel_release=$release"
    echo "kernel_pkg=$kpkg"
    echo "kernel_version=$kver"
    echo "kernel_deb_sha256=$(sha256sum "$kdeb" | cut -d' ' -f1)"
    echo "busybox_version=$bbver"
    echo "busybox_deb_sha256=$(sha256sum "$bbdeb" | cut -d' ' -f1)"
    echo "modules=$(IFS=,; echo "${boot_order[*]}")"
  } >"$out/build-info"
  echo "built $(du -h "$out/initrd.cpio.gz" | cut -f1) initrd, $(du -h "$out/vmlinux" | cut -f1) vmlinux"
}

case ${1:-} in
  resolve) resolve ;;
  build) shift; build "$@" ;;
  *) die "parsing arguments failed: expected \`resolve\` or \`build\` — see the header of $0" ;;
esac
