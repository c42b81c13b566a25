/* agent.h: shared state and interfaces of provium-agent (see PROTOCOL.md).
 *
 * One process, one thread, one poll loop (loop.c). Every object that the loop polls is freed
 * only in its module's tick, never while poll results are being dispatched, so a dispatch
 * callback can always trust the pointer it was registered with. */
#ifndef PROVIUM_AGENT_H
#define PROVIUM_AGENT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mp.h"

#define PROTOCOL_VERSION 1
#define AGENT_VERSION "0.1.0"
#define PORT_NAME "org.provium.agent"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#define MAX_FRAME_BYTES (64u << 20) /* either direction */
#define OUTPUT_CAP (16u << 20)      /* captured bytes kept per process stream */
#define STREAM_CHUNK (64u << 10)    /* largest stream_data payload */
#define OUTQ_HIGH (4u << 20)        /* above this many queued bytes, stop producing */
#define READ_MAX (16u << 20)        /* cap on `read` len and `read_mem` len */
#define READ_FILE_MAX (60u << 20)   /* read_file fails with EFBIG beyond this */
#define TAIL_POLL_MS 20
#define GRACE_MS 100       /* wait for pipes after a child exits (grandchildren) */
#define PORT_RECHECK_MS 50 /* virtio port: look for the host again (SIGIO is faster) */
#define FRAME_STALL_MS 5000 /* a frame left half-received this long (waiting) is a bad frame */
#define PORT_REOPEN_MS 1000 /* the port was closed under us and cannot be opened: try again */
#define EXIT_CONN_LOST 75   /* a worker whose channel to the main agent was closed under it */

#define NO_DEADLINE INT64_MAX

enum mode { MODE_STANDALONE, MODE_CHAIN, MODE_WORKER, MODE_LISTEN };

/* ---- util.c ---- */
struct buf {
	uint8_t *p;
	size_t len, cap;
};
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
void buf_free(struct buf *b);
int64_t now_ms(void);
static inline void dl_min(int64_t *dl, int64_t t)
{
	if (t < *dl)
		*dl = t;
}
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
int set_nonblock(int fd, bool on);
/* read/write with O_NONBLOCK set for the duration of the call (for descriptors we share). */
ssize_t nb_read(int fd, void *p, size_t n);
ssize_t nb_write(int fd, const void *p, size_t n);
void close_fd(int *fd);
void close_all_except(int keep_a, int keep_b); /* closes every fd >= 3 but these two */

/* ---- io.c: framing, output queues, the poll set ---- */
struct chunk {
	struct chunk *next;
	uint8_t *p;
	size_t len, off;
};
struct outq {
	struct chunk *head, *tail;
	size_t bytes;
};
void outq_push(struct outq *q, uint8_t *p, size_t len); /* takes ownership of p */
int outq_flush(struct outq *q, int fd);                 /* -1 on a write error */
void outq_clear(struct outq *q);

struct reader {
	uint8_t *stage;
	size_t slen, soff;
	uint8_t hdr[4];
	size_t hgot;
	uint8_t *frame; /* 4-byte header + body */
	size_t flen, fgot;
};
enum { RD_AGAIN = 0, RD_FRAME = 1, RD_TOOBIG = -1, RD_NOMEM = -2 };
ssize_t reader_fill(struct reader *r, int fd);
int reader_next(struct reader *r, uint8_t **frame, size_t *flen, uint32_t *badlen);
void reader_reset(struct reader *r);
bool reader_resync_hello(struct reader *r);
bool reader_partial(const struct reader *r); /* inside a frame */
void reader_drop_frame(struct reader *r);       /* forget a partial frame, keep what is staged */

typedef void (*poll_fn)(void *obj, int tag, short revents);
void ps_reset(void);
void ps_add(int fd, short events, poll_fn fn, void *obj, int tag);
void ps_run(int timeout_ms);
int64_t ps_last_wait_ms(void); /* how long the last poll waited */

/* ---- loop.c: the host connection and the loop ---- */
enum conn_kind { CONN_PORT, CONN_LISTEN, CONN_WORKER };
struct conn {
	enum conn_kind kind;
	int fd;          /* port, accepted socket or worker socketpair; -1 when none */
	int lfd;         /* listening socket (CONN_LISTEN) */
	bool up;         /* a host is there */
	bool discard;    /* a bad frame was seen: drop input until the host goes away or says hello */
	bool got_input;   /* this loop iteration read something */
	int64_t stall_ms; /* time spent waiting in poll, inside a frame, with no input */
	bool check_port; /* SIGIO arrived: look at the port now */
	int64_t recheck_ms;
	struct reader rd;
	struct outq q;
	/* What fd is, so that a layer-0 close(2) or dup2(2) on it is noticed (conn_check). */
	dev_t fd_dev;
	ino_t fd_ino;
	bool lost;          /* CONN_PORT: fd was closed under us; report lost_msg once it is back */
	char lost_msg[512];
};
void signals_init(void);
void crash_init(void); /* crash.c: SEGV, BUS, ILL, FPE, ABRT */
void serve(void) __attribute__((noreturn));
bool host_room(void);               /* connected and the output queue is below OUTQ_HIGH */
void host_send(uint64_t gen, uint8_t *p, size_t len); /* a whole frame; dropped if stale */
void host_send_raw(uint8_t *p, size_t len);
void new_session(void);
void conn_bad_frame(const char *msg); /* agent_error, then drop input until disconnect */
void conn_remember_fd(void);          /* after conn.fd was set: note what it is */
void conn_check(void);                /* after a layer-0 call: is conn.fd still ours? */
int port_reopen(void);                /* main.c: one attempt to open the port again; fd or -1 */
void port_setup(int fd);              /* main.c: SIGIO and non-blocking on a freshly opened port */

/* ---- req.c: requests, replies, arguments, batches ---- */
struct scratch;
struct batch;
struct req {
	uint32_t id;
	uint64_t gen; /* session the request came from; replies to older sessions are dropped */
	struct batch *batch;
	uint32_t index;
	struct mpw w;
	struct scratch *scratch;
};
struct batch {
	struct batch *next;
	struct req *parent;
	uint8_t *ops; /* copy of the `ops` array */
	uint32_t n, next_i;
	mpv cur;
	struct mpw *results;
	bool waiting, running, done;
};
extern const uint8_t EMPTY_MAP[1];
void host_frame(uint8_t *frame, size_t flen);
struct req *req_new(uint32_t id, uint64_t gen, struct batch *b, uint32_t index);
void *req_alloc(struct req *r, size_t n);
char *req_strndup(struct req *r, const char *s, size_t n);
void frame_begin(struct mpw *w, uint32_t id, const char *kind);
bool frame_end(struct mpw *w); /* patches the length; false if oom or too big */
struct mpw *ok_begin(struct req *r, uint32_t nfields);
void ok_end(struct req *r);
void ok_empty(struct req *r);
void reply_err(struct req *r, int err, const char *msg);
void reply_errno(struct req *r, int err);
void reply_errf(struct req *r, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void req_drop(struct req *r);
void batch_tick(int64_t now, int64_t *dl);
/* Argument helpers: on failure they reply EINVAL (naming the field) and return false. */
bool arg_u64(struct req *r, mpv d, const char *k, uint64_t *out);
bool opt_u64(struct req *r, mpv d, const char *k, uint64_t *out, bool *has);
bool arg_i64(struct req *r, mpv d, const char *k, int64_t *out);
bool opt_bool(struct req *r, mpv d, const char *k, bool *out);
bool arg_cstr(struct req *r, mpv d, const char *k, char **out);
bool opt_cstr(struct req *r, mpv d, const char *k, char **out);
bool arg_bytes(struct req *r, mpv d, const char *k, const uint8_t **p, size_t *n);
bool opt_bytes(struct req *r, mpv d, const char *k, const uint8_t **p, size_t *n);
bool opt_arr(struct req *r, mpv d, const char *k, mpv *out);
bool arg_arr(struct req *r, mpv d, const char *k, mpv *out);
bool opt_map(struct req *r, mpv d, const char *k, mpv *out);
bool arg_fd(struct req *r, mpv d, const char *k, int *fd); /* a user fd, never an agent fd */

/* ---- proc.c ---- */
struct stream;
struct waiter {
	struct waiter *next;
	struct req *r;
	int64_t deadline;
};
/* True when a waiter's deadline has passed (those deadlines are cleared); the others are folded into *dl. */
static inline bool waiters_expired(struct waiter *list, int64_t now, int64_t *dl)
{
	bool expired = false;
	for (struct waiter *w = list; w; w = w->next) {
		if (w->deadline == NO_DEADLINE)
			continue;
		if (now >= w->deadline) {
			w->deadline = NO_DEADLINE;
			expired = true;
		} else {
			dl_min(dl, w->deadline);
		}
	}
	return expired;
}
struct outpipe {
	int fd;
	struct buf cap;
	bool truncated;
	bool streamed;         /* a proc_stream took this pipe over */
	struct stream *stream; /* while it is attached */
};
struct inchunk {
	struct inchunk *next;
	uint8_t *p;
	size_t len, off;
	struct req *r; /* replied when the chunk is in the pipe (or at the close) */
	bool close;    /* marker: close stdin here */
};
struct proc {
	struct proc *next;
	uint32_t handle; /* 0 for exec */
	pid_t pid;
	bool reaped, timed_out, done, waited, released;
	int wstatus;
	int64_t reap_ms;
	struct outpipe out[2];
	int in_fd;
	bool in_closed;
	struct inchunk *inq, *inq_tail;
	struct waiter *waiters;
};
struct proc *proc_by_handle(uint64_t handle);
bool proc_on_exit(pid_t pid, int wstatus);
void proc_tick(int64_t now, int64_t *dl);
void proc_pollfds(void);
void put_exitinfo(struct mpw *w, bool reaped, int wstatus, bool timed_out); /* 3 pairs */

/* ---- stream.c ---- */
enum stream_type { ST_PIPE, ST_TAIL, ST_FD };
struct stream {
	struct stream *next;
	uint32_t id;
	uint64_t gen;
	enum stream_type type;
	int fd;
	uint64_t pos, credit;
	int64_t last_size;
	struct buf pend; /* bytes owed before reading more (a process's captured output) */
	size_t pend_off;
	bool eof, dead;
	int err;
	int64_t next_poll;
	struct proc *owner; /* ST_PIPE: the process the pipe belongs to, while it exists */
	int which;
};
void stream_detach_owner(struct stream *s);
void streams_drop_all(void);
void stream_tick(int64_t now, int64_t *dl);
void stream_pollfds(void);

/* ---- files.c ---- */
struct fdop {
	struct fdop *next;
	struct req *r;
	int fd;
	bool write, done;
	uint8_t *data;
	size_t len, off;
};
void fdop_tick(int64_t now, int64_t *dl);
void fdop_pollfds(void);

/* ---- sys.c ---- */
struct sleeper {
	struct sleeper *next;
	struct req *r;
	int64_t deadline;
};
void sleep_tick(int64_t now, int64_t *dl);
int seed_kernel_rng(const uint8_t *p, size_t n);
const char *mode_name(void);

/* ---- power.c: the ACPI power button (standalone PID 1) ---- */
#define POWER_MAX_FDS 4
void load_module_list(const char *list_path); /* main.c */
void seed_rng_from_fw_cfg(void);              /* main.c: fw_cfg's rng-seed into the kernel */
bool root_wanted(void);                       /* root.c: provium.root= given, not yet switched */
void root_switch(void) __attribute__((noreturn));
void power_init(void);
void power_pollfds(void);
void power_tick(int64_t now, int64_t *dl);

/* ---- worker.c ---- */
struct worker {
	struct worker *next;
	uint32_t id;
	pid_t pid;
	int sock;
	struct reader rd;
	struct outq q; /* frames to the worker */
	bool reaped, eof, exit_sent, joined, timed_out;
	bool discarding; /* after a session reset: drop its frames until it acknowledges */
	int wstatus;
	int64_t reap_ms;
	struct waiter *joiners;
};
void worker_relay(uint32_t wid, uint32_t id, uint8_t *frame, size_t flen);
bool worker_on_exit(pid_t pid, int wstatus);
void workers_reset(void);
void worker_tick(int64_t now, int64_t *dl);
void worker_pollfds(void);
bool workers_backlogged(void);

/* ---- ops (one handler per op; each completes its request exactly once) ---- */
#define OPS(X) \
	X(hello) X(ping) X(exec) X(spawn) X(wait) X(proc_status) X(kill) X(get_pid) \
	X(stdin_write) X(stdin_close) X(proc_stream) X(release) X(read_file) X(write_file) \
	X(stat) X(listdir) X(mkdir) X(unlink) X(rename) X(open_file) X(read) X(write) X(seek) \
	X(close) X(tail_file) X(fd_stream) X(stream_ack) X(stream_close) X(get_time) \
	X(set_time) X(advance_time) X(sleep) X(seed_rng) X(syscall) X(ioctl) X(read_mem) \
	X(batch) X(spawn_worker) X(worker_join) X(kill_all) X(exit)
#define DECLARE_OP(name) void op_##name(struct req *r, mpv d);
OPS(DECLARE_OP)

/* ---- global state ---- */
struct agent {
	enum mode mode;
	bool is_init; /* PID 1: must never exit, reaps orphans */
	pid_t pid;
	uint64_t gen;
	int sigpipe[2];
	int log_fd;
	char port_desc[300];
	struct conn conn;
	bool exiting; /* worker: `exit` was answered; leave once it is flushed */
	int power_fd[POWER_MAX_FDS]; /* "Power Button" event devices (standalone only) */
	bool power_dead[POWER_MAX_FDS];
	int npower;
	int64_t poweroff_ms; /* shutting down: power off at this time at the latest; 0 when not */
	uint32_t next_handle, next_worker;
	struct proc *procs;
	struct stream *streams;
	struct worker *workers;
	struct sleeper *sleepers;
	struct fdop *fdops;
	struct batch *batches;
};
extern struct agent A;

#endif
