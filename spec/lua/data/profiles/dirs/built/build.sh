#!/bin/sh
# $1 is {out}. Provium runs this in the profile's directory with PROVIUM_CACHE_DIR set.
set -eu
out=$1
kernel="$PROVIUM_CACHE_DIR/images/minimal/vmlinux"
[ -f "$kernel" ] || { echo "build.sh: $kernel is missing — run \`provium image build\`" >&2; exit 1; }
cp "$kernel" "$out/vmlinux"
cp cmdline.txt "$out/cmdline"
echo "build.sh: kernel and cmdline in $out"
