/* sys.c: handshake, clock, RNG, and the layer-0 calls (syscall, ioctl, read_mem).
 * A syscall or ioctl runs on a thread of its own (sharing memory and the file table), so one
 * that blocks stalls only itself, bounded by its timeout_ms; calls that change per-thread state
 * (credentials, signal masks, namespaces) or may touch the agent's own port run inline. */
#include "agent.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

static void l0_tick(int64_t now, int64_t *dl);

/* Also runs the layer-0 threads' completions and timeouts (one tick for every timer of sys.c). */
void sleep_tick(int64_t now, int64_t *dl)
{
	l0_tick(now, dl);
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

/* ---- layer-0 threads ---- */

/* Interrupts a call past its timeout (EINTR); its handler does nothing. musl keeps SIGRTMIN-1..-3. */
#define SIG_L0 (SIGRTMIN + 2)
/* After the interrupt, how long the call gets to come back before it is abandoned. */
#define L0_ABANDON_MS 1000

enum { L0_RUNNING, L0_DONE, L0_ABANDONED };

struct l0call {
	struct l0call *next;
	struct req *r;
	bool ioctl;
	long nr;
	uint64_t a[6];
	struct bufs b;
	uint8_t *arg; /* ioctl data */
	size_t dlen;
	bool has_data;
	long ret;
	int err;
	int64_t deadline, abandon_at;
	uint64_t timeout_ms;
	bool timed_out; /* interrupted at its deadline */
	pthread_t th;
	atomic_int state;
};

static struct l0call *l0_calls;

/* Syscalls whose effect is per thread (or that may close the agent's port): never on a helper. */
static bool l0_inline(long nr)
{
	switch (nr) {
	case 3: case 33: case 292: case 436:              /* close, dup2, dup3, close_range */
	case 13: case 14: case 15: case 131:              /* rt_sigaction, rt_sigprocmask, rt_sigreturn, sigaltstack */
	case 56: case 57: case 58: case 59: case 60:      /* clone, fork, vfork, execve, exit */
	case 231: case 322: case 435:                     /* exit_group, execveat, clone3 */
	case 105: case 106: case 113: case 114: case 116: /* setuid, setgid, setreuid, setregid, setgroups */
	case 117: case 119: case 122: case 123: case 126: /* setresuid, setresgid, setfsuid, setfsgid, capset */
	case 135: case 157: case 158: case 272: case 308: /* personality, prctl, arch_prctl, unshare, setns */
	case 317: case 446: case 250: case 186: case 218: /* seccomp, landlock_restrict_self, keyctl, gettid, set_tid_address */
	case 273: case 334: case 205: case 211: case 154: /* set_robust_list, rseq, set/get_thread_area, modify_ldt */
	case 141: case 142: case 144: case 203: case 314: /* setpriority, sched_setparam/_setscheduler/_setaffinity/_setattr */
	case 251:                                         /* ioprio_set */
		return true;
	default:
		return false;
	}
}

static void l0_noop(int sig) { (void)sig; }

static void *l0_thread(void *p)
{
	struct l0call *c = p;
	sigset_t only;
	sigemptyset(&only);
	sigaddset(&only, SIG_L0);
	pthread_sigmask(SIG_UNBLOCK, &only, NULL);
	errno = 0;
	long ret = c->ioctl ? syscall(SYS_ioctl, (int)c->a[0], (unsigned long)c->a[1], c->arg)
			    : syscall(c->nr, c->a[0], c->a[1], c->a[2], c->a[3], c->a[4], c->a[5]);
	c->err = ret == -1 ? errno : 0;
	c->ret = ret;
	if (atomic_exchange(&c->state, L0_DONE) == L0_ABANDONED) {
		/* Its request was answered long ago: nobody else owns this any more. */
		bufs_free(&c->b);
		free(c->arg);
		free(c);
		return NULL;
	}
	int e = errno;
	(void)!write(A.sigpipe[1], "L", 1); /* wakes the loop (a harmless port re-check) */
	errno = e;
	return NULL;
}

/* Starts `c` on a thread; false (errno set) when no thread could be made. */
static bool l0_start(struct l0call *c)
{
	static bool installed;
	if (!installed) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = l0_noop; /* no SA_RESTART: the blocked call returns EINTR */
		sigemptyset(&sa.sa_mask);
		sigaction(SIG_L0, &sa, NULL);
		installed = true;
	}
	/* The thread starts with every signal blocked (the loop's signals stay the main thread's). */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, 64 * 1024);
	atomic_init(&c->state, L0_RUNNING);
	int rc = pthread_create(&c->th, &at, l0_thread, c);
	pthread_attr_destroy(&at);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		return false;
	}
	c->next = l0_calls;
	l0_calls = c;
	return true;
}

static void l0_reply(struct l0call *c)
{
	struct req *r = c->r;
	if (!c->ioctl)
		conn_check();
	struct mpw *w = ok_begin(r, c->ioctl && c->has_data ? 4 : 3);
	mpw_str(w, "ret");
	mpw_int(w, c->ret);
	mpw_str(w, "errno");
	mpw_int(w, c->err);
	if (c->ioctl && c->has_data) {
		mpw_str(w, "out_data");
		mpw_bin(w, c->arg, c->dlen);
	}
	put_out_bufs(w, &c->b);
	ok_end(r);
}

static void l0_free(struct l0call *c)
{
	bufs_free(&c->b);
	free(c->arg);
	free(c);
}

/* Runs `c` inline (per-thread calls, or when no thread can be made) and replies. */
static void l0_inline_run(struct l0call *c)
{
	errno = 0;
	c->ret = c->ioctl ? syscall(SYS_ioctl, (int)c->a[0], (unsigned long)c->a[1], c->arg)
			  : syscall(c->nr, c->a[0], c->a[1], c->a[2], c->a[3], c->a[4], c->a[5]);
	c->err = c->ret == -1 ? errno : 0;
	l0_reply(c);
	l0_free(c);
}

static void l0_run(struct l0call *c, bool has_timeout)
{
	c->deadline = has_timeout ? now_ms() + (int64_t)c->timeout_ms : NO_DEADLINE;
	c->abandon_at = NO_DEADLINE;
	if ((!c->ioctl && l0_inline(c->nr)) || !l0_start(c))
		l0_inline_run(c);
}

static void l0_tick(int64_t now, int64_t *dl)
{
	struct l0call **pp = &l0_calls;
	while (*pp) {
		struct l0call *c = *pp;
		if (atomic_load(&c->state) == L0_DONE) {
			*pp = c->next;
			pthread_join(c->th, NULL);
			if (c->timed_out && c->ret == -1 && c->err == EINTR)
				reply_errf(c->r, ETIMEDOUT, "%s did not return within %llu ms (timeout_ms); it was interrupted",
					   c->ioctl ? "ioctl" : "syscall", (unsigned long long)c->timeout_ms);
			else
				l0_reply(c);
			l0_free(c);
			continue;
		}
		if (c->abandon_at != NO_DEADLINE && now >= c->abandon_at) {
			/* Interrupted and still not back (an uninterruptible wait): answer, leave it behind. */
			if (atomic_exchange(&c->state, L0_ABANDONED) == L0_DONE) {
				atomic_store(&c->state, L0_DONE);
				continue; /* it just finished: the next pass replies */
			}
			*pp = c->next;
			pthread_detach(c->th);
			reply_errf(c->r, ETIMEDOUT, "%s did not return within %llu ms (timeout_ms) and ignored the interrupt; it was left blocked in the guest",
				   c->ioctl ? "ioctl" : "syscall", (unsigned long long)c->timeout_ms);
			continue;
		}
		if (now >= c->deadline && c->abandon_at == NO_DEADLINE) {
			pthread_kill(c->th, SIG_L0);
			c->abandon_at = now + L0_ABANDON_MS;
			c->timed_out = true;
		}
		dl_min(dl, c->abandon_at != NO_DEADLINE ? c->abandon_at : c->deadline);
		pp = &c->next;
	}
}

void op_syscall(struct req *r, mpv d)
{
	uint64_t nr, a[6] = { 0 }, timeout_ms = 0;
	bool has_timeout = false;
	mpv args, bufs_v, ptrs, nested, it;
	struct bufs b;
	if (!arg_u64(r, d, "nr", &nr) || !opt_arr(r, d, "args", &args) || !opt_arr(r, d, "bufs", &bufs_v) ||
	    !opt_arr(r, d, "ptrs", &ptrs) || !opt_arr(r, d, "nested", &nested) ||
	    !opt_u64(r, d, "timeout_ms", &timeout_ms, &has_timeout))
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
	struct l0call *c = calloc(1, sizeof *c);
	if (!c) {
		bufs_free(&b);
		reply_errno(r, ENOMEM);
		return;
	}
	c->r = r;
	c->nr = (long)nr;
	memcpy(c->a, a, sizeof a);
	c->b = b;
	c->timeout_ms = timeout_ms;
	/* A close(2) or dup2(2) may hit our own channel to the host: those run inline, and the
	 * reply checks the channel first (the host hears of it before this reply). */
	l0_run(c, has_timeout);
}

void op_ioctl(struct req *r, mpv d)
{
	uint64_t fd, cmd, timeout_ms = 0;
	bool has_timeout = false;
	const uint8_t *data = NULL;
	size_t dlen = 0;
	mpv bufs_v, offs, dv;
	struct bufs b;
	uint8_t *arg = NULL;
	if (!arg_u64(r, d, "fd", &fd) || !arg_u64(r, d, "cmd", &cmd) || !opt_arr(r, d, "bufs", &bufs_v) ||
	    !opt_arr(r, d, "ptr_offsets", &offs) || !opt_u64(r, d, "timeout_ms", &timeout_ms, &has_timeout))
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
	struct l0call *c = calloc(1, sizeof *c);
	if (!c) {
		free(arg);
		bufs_free(&b);
		reply_errno(r, ENOMEM);
		return;
	}
	c->r = r;
	c->ioctl = true;
	c->a[0] = fd;
	c->a[1] = cmd;
	c->b = b;
	c->arg = arg;
	c->dlen = dlen;
	c->has_data = has_data;
	c->timeout_ms = timeout_ms;
	l0_run(c, has_timeout);
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
