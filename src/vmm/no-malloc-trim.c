// Preloaded into every QEMU provium starts (qemuEnv in qemu.ts). QEMU calls malloc_trim() after
// each batch of RCU callbacks, and glibc's trim madvise()s every free page range of every arena:
// about 1,800 calls in one restore and its test, each a TLB shootdown across the cores QEMU's
// threads ran on. On a paravirtualized host that was 9% of a fixture suite's CPU. QEMU's own
// `configure --disable-malloc-trim` builds the same QEMU; this makes a distribution's QEMU one.
#include <stddef.h>

int malloc_trim(size_t pad) {
  (void)pad;
  return 0;
}
