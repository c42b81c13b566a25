/* sys.c: handshake, clock, RNG, and the layer-0 calls (syscall, ioctl, read_mem).
 * Layer-0 calls run inline in the serving process: a blocking one blocks it. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

/* <linux/random.h> is not available to musl-gcc: _IOW('R', 0x03, int[2]). */
#define RNDADDENTROPY 0x40085203UL
#define RNDRESEEDCRNG 0x5207UL

const char *mode_name(void)
{
	switch (A.mode) {
	case MODE_STANDALONE: return "standalone";
	case MODE_CHAIN: return "chain";
	case MODE_WORKER: return "worker";
	default: return "listen";
	}
}

void op_hello(struct req *r, mpv d)
{
	uint64_t v;
	if (!arg_u64(r, d, "protocol_version", &v))
		return;
	if (v != PROTOCOL_VERSION) {
		reply_errf(r, EPROTO, "protocol version mismatch: host speaks %llu, agent speaks %d",
			   (unsigned long long)v, PROTOCOL_VERSION);
		return;
	}
	/* A hello starts a new session even without a disconnect we could see (a restored guest). */
	new_session();
	r->gen = A.gen;
	struct utsname u;
	if (uname(&u) < 0)
		strcpy(u.release, "unknown");
	struct mpw *w = ok_begin(r, 6);
	mpw_str(w, "protocol_version");
	mpw_uint(w, PROTOCOL_VERSION);
	mpw_str(w, "agent_version");
	mpw_str(w, AGENT_VERSION);
	mpw_str(w, "os");
	mpw_str(w, "linux");
	mpw_str(w, "kernel");
	mpw_str(w, u.release);
	mpw_str(w, "pid");
	mpw_int(w, getpid());
	mpw_str(w, "mode");
	mpw_str(w, mode_name());
	ok_end(r);
}

void op_ping(struct req *r, mpv d)
{
	mpv t = mp_find(d, "token");
	if (!t || mp_type(t) == MP_NIL) {
		reply_err(r, EINVAL, "missing field `token`");
		return;
	}
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "token");
	mpw_raw(w, t, (size_t)(mp_skip(t) - t)); /* echoed exactly as sent */
	ok_end(r);
}

/* ---- clock ---- */

static void reply_time(struct req *r, const struct timespec *ts)
{
	struct mpw *w = ok_begin(r, 2);
	mpw_str(w, "sec");
	mpw_int(w, ts->tv_sec);
	mpw_str(w, "nsec");
	mpw_int(w, ts->tv_nsec);
	ok_end(r);
}

void op_get_time(struct req *r, mpv d)
{
	(void)d;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	reply_time(r, &ts);
}

void op_set_time(struct req *r, mpv d)
{
	int64_t sec, nsec;
	if (!arg_i64(r, d, "sec", &sec) || !arg_i64(r, d, "nsec", &nsec))
		return;
	if (nsec < 0 || nsec > 999999999) {
		reply_err(r, EINVAL, "field `nsec` must be in [0, 999999999]");
		return;
	}
	struct timespec ts = { .tv_sec = sec, .tv_nsec = nsec };
	if (clock_settime(CLOCK_REALTIME, &ts) < 0)
		reply_errno(r, errno);
	else
		ok_empty(r);
}

void op_advance_time(struct req *r, mpv d)
{
	int64_t ns;
	if (!arg_i64(r, d, "ns", &ns))
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ns / 1000000000;
	ts.tv_nsec += ns % 1000000000;
	if (ts.tv_nsec < 0) {
		ts.tv_nsec += 1000000000;
		ts.tv_sec--;
	} else if (ts.tv_nsec >= 1000000000) {
		ts.tv_nsec -= 1000000000;
		ts.tv_sec++;
	}
	if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
		reply_errno(r, errno);
		return;
	}
	reply_time(r, &ts);
}

void op_sleep(struct req *r, mpv d)
{
	int64_t ns;
	if (!arg_i64(r, d, "ns", &ns))
		return;
	if (ns < 0) {
		reply_err(r, EINVAL, "field `ns` must not be negative");
		return;
	}
	struct sleeper *s = calloc(1, sizeof *s);
	if (!s) {
		reply_errno(r, ENOMEM);
		return;
	}
	s->r = r;
	s->deadline = now_ms() + ns / 1000000 + (ns % 1000000 ? 1 : 0);
	s->next = A.sleepers;
	A.sleepers = s;
}

void sleep_tick(int64_t now, int64_t *dl)
{
	struct sleeper **pp = &A.sleepers;
	while (*pp) {
		struct sleeper *s = *pp;
		if (now >= s->deadline) {
			*pp = s->next;
			ok_empty(s->r);
			free(s);
			continue;
		}
		dl_min(dl, s->deadline);
		pp = &s->next;
	}
}

/* ---- RNG ---- */

int seed_kernel_rng(const uint8_t *p, size_t n)
{
	if (n == 0)
		return 0;
	if (n > 1u << 20) {
		errno = EINVAL;
		return -1;
	}
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct {
		int entropy_count;
		int buf_size;
		unsigned char buf[];
	} *e = malloc(sizeof *e + n);
	int rc = -1;
	if (!e) {
		errno = ENOMEM;
		goto out;
	}
	e->entropy_count = (int)(n * 8);
	e->buf_size = (int)n;
	memcpy(e->buf, p, n);
	/* Credit the entropy when allowed (root); otherwise mixing it in is still worth it. */
	if (syscall(SYS_ioctl, fd, RNDADDENTROPY, e) == 0 || write(fd, p, n) == (ssize_t)n)
		rc = 0;
	/* Added entropy reaches /dev/urandom only at the next reseed, which may be a minute away:
	 * clones restored from one snapshot would read the same bytes until then. */
	if (rc == 0)
		(void)syscall(SYS_ioctl, fd, RNDRESEEDCRNG, 0);
	free(e);
out:;
	int err = errno;
	close(fd);
	errno = err;
	return rc;
}

/* What the guest's hwrng layers can hold (the core's buffer and virtio-rng's, 64 bytes each on
 * x86), with room to spare. */
#define HWRNG_DRAIN_BYTES 256
#define HWRNG_DRAIN_TRIES 500

/* After a restore, /dev/hwrng would first hand out the bytes its buffers held when the snapshot
 * was taken: the same in every clone. Reading a fixed amount past them leaves the device's stream
 * (seeded by rng_seed) at the same place in every clone of one snapshot. Non-blocking with short
 * sleeps, so a stalled device costs at most half a second. */
static void drain_hwrng(void)
{
	int fd = open("/dev/hwrng", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return;
	unsigned char buf[HWRNG_DRAIN_BYTES];
	size_t got = 0;
	for (int tries = 0; got < sizeof buf && tries < HWRNG_DRAIN_TRIES;) {
		ssize_t n = read(fd, buf + got, sizeof buf - got);
		if (n > 0) {
			got += (size_t)n;
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			break;
		} else {
			tries++;
			usleep(1000);
		}
	}
	close(fd);
}

void op_seed_rng(struct req *r, mpv d)
{
	const uint8_t *p;
	size_t n;
	if (!arg_bytes(r, d, "seed", &p, &n))
		return;
	drain_hwrng();
	if (seed_kernel_rng(p, n) < 0)
		reply_errno(r, errno);
	else
		ok_empty(r);
}

/* ---- layer 0 ---- */

struct bufs {
	uint32_t n;
	uint8_t **p;
	size_t *len;
};

static void bufs_free(struct bufs *b)
{
	for (uint32_t k = 0; k < b->n; k++)
		free(b->p[k]);
	free(b->p);
	free(b->len);
	memset(b, 0, sizeof *b);
}

/* Copies `bufs` into separately allocated (and so stable, aligned) memory. */
static bool bufs_load(struct req *r, mpv arr, struct bufs *b)
{
	memset(b, 0, sizeof *b);
	if (!arr)
		return true;
	uint32_t n = mp_count(arr);
	b->p = calloc(n ? n : 1, sizeof *b->p);
	b->len = calloc(n ? n : 1, sizeof *b->len);
	if (!b->p || !b->len)
		goto oom;
	b->n = n;
	mpv it = mp_items(arr);
	for (uint32_t k = 0; k < n; k++, it = mp_skip(it)) {
		const uint8_t *p;
		size_t len;
		if (!mp_get_bytes(it, &p, &len)) {
			bufs_free(b);
			reply_err(r, EINVAL, "field `bufs` must be an array of bytes");
			return false;
		}
		if (!(b->p[k] = malloc(len ? len : 1)))
			goto oom;
		memcpy(b->p[k], p, len);
		b->len[k] = len;
	}
	return true;
oom:
	bufs_free(b);
	reply_errno(r, ENOMEM);
	return false;
}

static void put_le64(uint8_t *dst, uint64_t v)
{
	for (int k = 0; k < 8; k++)
		dst[k] = (uint8_t)(v >> (8 * k));
}

static void put_out_bufs(struct mpw *w, struct bufs *b)
{
	mpw_str(w, "out_bufs");
	mpw_arr(w, b->n);
	for (uint32_t k = 0; k < b->n; k++)
		mpw_bin(w, b->p[k], b->len[k]);
}

/* Reads a small array of unsigned ints (a [slot, index] pair, a nested triple). */
static bool uint_tuple(mpv v, uint32_t want, uint64_t *out)
{
	if (mp_type(v) != MP_ARR || mp_count(v) != want)
		return false;
	mpv it = mp_items(v);
	for (uint32_t k = 0; k < want; k++, it = mp_skip(it))
		if (!mp_get_u64(it, &out[k]))
			return false;
	return true;
}

void op_syscall(struct req *r, mpv d)
{
	uint64_t nr, a[6] = { 0 };
	mpv args, bufs_v, ptrs, nested, it;
	struct bufs b;
	if (!arg_u64(r, d, "nr", &nr) || !opt_arr(r, d, "args", &args) || !opt_arr(r, d, "bufs", &bufs_v) ||
	    !opt_arr(r, d, "ptrs", &ptrs) || !opt_arr(r, d, "nested", &nested))
		return;
	if (args) {
		if (mp_count(args) > 6) {
			reply_err(r, EINVAL, "field `args` has more than 6 entries");
			return;
		}
		it = mp_items(args);
		for (uint32_t k = 0; k < mp_count(args); k++, it = mp_skip(it)) {
			if (!mp_get_word(it, &a[k])) {
				reply_err(r, EINVAL, "field `args` must be an array of integers");
				return;
			}
		}
	}
	if (!bufs_load(r, bufs_v, &b))
		return;
	/* nested first (addresses inside buffers), then ptrs (addresses as arguments). */
	if (nested) {
		it = mp_items(nested);
		for (uint32_t k = 0; k < mp_count(nested); k++, it = mp_skip(it)) {
			uint64_t t[3];
			if (!uint_tuple(it, 3, t) || t[0] >= b.n || t[1] >= b.n || t[2] > b.len[t[0]] ||
			    b.len[t[0]] - t[2] < 8) {
				bufs_free(&b);
				reply_err(r, EINVAL, "field `nested` must hold [parent, child, offset] within the buffers");
				return;
			}
			put_le64(b.p[t[0]] + t[2], (uint64_t)(uintptr_t)b.p[t[1]]);
		}
	}
	if (ptrs) {
		it = mp_items(ptrs);
		for (uint32_t k = 0; k < mp_count(ptrs); k++, it = mp_skip(it)) {
			uint64_t t[2];
			if (!uint_tuple(it, 2, t) || t[0] >= 6 || t[1] >= b.n) {
				bufs_free(&b);
				reply_err(r, EINVAL, "field `ptrs` must hold [slot < 6, buffer index]");
				return;
			}
			a[t[0]] = (uint64_t)(uintptr_t)b.p[t[1]];
		}
	}
	errno = 0;
	long ret = syscall((long)nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	int e = ret == -1 ? errno : 0;
	/* A close(2) or dup2(2) may have hit our own channel to the host: find out now, before its
	 * number is reused (the host hears of it before this reply). */
	conn_check();
	struct mpw *w = ok_begin(r, 3);
	mpw_str(w, "ret");
	mpw_int(w, ret);
	mpw_str(w, "errno");
	mpw_int(w, e);
	put_out_bufs(w, &b);
	bufs_free(&b);
	ok_end(r);
}

void op_ioctl(struct req *r, mpv d)
{
	uint64_t fd, cmd;
	const uint8_t *data = NULL;
	size_t dlen = 0;
	mpv bufs_v, offs, dv;
	struct bufs b;
	uint8_t *arg = NULL;
	if (!arg_u64(r, d, "fd", &fd) || !arg_u64(r, d, "cmd", &cmd) || !opt_arr(r, d, "bufs", &bufs_v) ||
	    !opt_arr(r, d, "ptr_offsets", &offs))
		return;
	dv = mp_find(d, "data");
	bool has_data = dv && mp_type(dv) != MP_NIL;
	if (has_data && !mp_get_bytes(dv, &data, &dlen)) {
		reply_err(r, EINVAL, "field `data` must be bytes (bin or str)");
		return;
	}
	if (fd > INT_MAX) {
		reply_errno(r, EBADF);
		return;
	}
	if (!bufs_load(r, bufs_v, &b))
		return;
	if (has_data) {
		if (!(arg = malloc(dlen ? dlen : 1))) {
			bufs_free(&b);
			reply_errno(r, ENOMEM);
			return;
		}
		memcpy(arg, data, dlen);
	}
	if (offs) {
		mpv it = mp_items(offs);
		uint32_t n = mp_count(offs);
		for (uint32_t k = 0; k < n; k++, it = mp_skip(it)) {
			uint64_t off;
			if (!has_data || k >= b.n || !mp_get_u64(it, &off) || off > dlen || dlen - off < 8) {
				free(arg);
				bufs_free(&b);
				reply_err(r, EINVAL, "field `ptr_offsets` must hold one offset within `data` per buffer");
				return;
			}
			put_le64(arg + off, (uint64_t)(uintptr_t)b.p[k]);
		}
	}
	errno = 0;
	long ret = syscall(SYS_ioctl, (int)fd, (unsigned long)cmd, arg);
	int e = ret == -1 ? errno : 0;
	struct mpw *w = ok_begin(r, has_data ? 4 : 3);
	mpw_str(w, "ret");
	mpw_int(w, ret);
	mpw_str(w, "errno");
	mpw_int(w, e);
	if (has_data) {
		mpw_str(w, "out_data");
		mpw_bin(w, arg, dlen);
	}
	put_out_bufs(w, &b);
	free(arg);
	bufs_free(&b);
	ok_end(r);
}

void op_read_mem(struct req *r, mpv d)
{
	uint64_t addr, len;
	if (!arg_u64(r, d, "addr", &addr) || !arg_u64(r, d, "len", &len))
		return;
	if (len > READ_MAX) {
		reply_errf(r, EINVAL, "field `len` must be at most %u", READ_MAX);
		return;
	}
	uint8_t *p = malloc(len ? len : 1);
	if (!p) {
		reply_errno(r, ENOMEM);
		return;
	}
	/* process_vm_readv on ourselves: a bad address is EFAULT, not a crash. */
	struct iovec local = { p, len }, remote = { (void *)(uintptr_t)addr, len };
	ssize_t n = len ? process_vm_readv(getpid(), &local, 1, &remote, 1, 0) : 0;
	if (n != (ssize_t)len) {
		int e = n < 0 ? errno : EFAULT;
		free(p);
		reply_errno(r, e);
		return;
	}
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "data");
	mpw_bin(w, p, len);
	free(p);
	ok_end(r);
}
