/* req.c: frames in, requests, replies, argument checks and batches.
 *
 * A request is completed exactly once, by ok_end(), reply_err*() or req_drop(), either inside
 * its handler or later from a tick. Top-level replies become frames; batch entries are kept
 * until the batch ends. Handlers copy whatever they keep: the frame is freed on return. */
#include "agent.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const uint8_t EMPTY_MAP[1] = { 0x80 };

struct scratch {
	struct scratch *next;
	_Alignas(16) unsigned char data[];
};

#define F_NOBATCH 1u
#define F_MAIN 2u   /* main agent only */
#define F_WORKER 4u /* worker only */

struct op {
	const char *name;
	void (*fn)(struct req *r, mpv d);
	unsigned flags;
};

static const struct op OPS_TABLE[] = {
	{ "hello", op_hello, F_NOBATCH },
	{ "ping", op_ping, 0 },
	{ "exec", op_exec, 0 },
	{ "spawn", op_spawn, 0 },
	{ "wait", op_wait, 0 },
	{ "proc_status", op_proc_status, 0 },
	{ "kill", op_kill, 0 },
	{ "get_pid", op_get_pid, 0 },
	{ "stdin_write", op_stdin_write, 0 },
	{ "stdin_close", op_stdin_close, 0 },
	{ "proc_stream", op_proc_stream, F_NOBATCH },
	{ "release", op_release, 0 },
	{ "read_file", op_read_file, 0 },
	{ "write_file", op_write_file, 0 },
	{ "stat", op_stat, 0 },
	{ "listdir", op_listdir, 0 },
	{ "mkdir", op_mkdir, 0 },
	{ "unlink", op_unlink, 0 },
	{ "rename", op_rename, 0 },
	{ "open_file", op_open_file, 0 },
	{ "read", op_read, 0 },
	{ "write", op_write, 0 },
	{ "seek", op_seek, 0 },
	{ "close", op_close, 0 },
	{ "tail_file", op_tail_file, F_NOBATCH },
	{ "fd_stream", op_fd_stream, F_NOBATCH },
	{ "stream_ack", op_stream_ack, F_NOBATCH },
	{ "stream_close", op_stream_close, F_NOBATCH },
	{ "get_time", op_get_time, 0 },
	{ "set_time", op_set_time, 0 },
	{ "advance_time", op_advance_time, 0 },
	{ "sleep", op_sleep, 0 },
	{ "seed_rng", op_seed_rng, 0 },
	{ "syscall", op_syscall, 0 },
	{ "ioctl", op_ioctl, 0 },
	{ "read_mem", op_read_mem, 0 },
	{ "batch", op_batch, F_NOBATCH },
	{ "spawn_worker", op_spawn_worker, F_NOBATCH | F_MAIN },
	{ "worker_join", op_worker_join, F_NOBATCH | F_MAIN },
	{ "kill_all", op_kill_all, 0 },
	{ "exit", op_exit, F_NOBATCH | F_WORKER },
};

/* ---- requests ---- */

struct req *req_new(uint32_t id, uint64_t gen, struct batch *b, uint32_t index)
{
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->id = id;
	r->gen = gen;
	r->batch = b;
	r->index = index;
	return r;
}

void *req_alloc(struct req *r, size_t n)
{
	struct scratch *s = malloc(sizeof *s + n);
	if (!s)
		return NULL;
	s->next = r->scratch;
	r->scratch = s;
	return s->data;
}

char *req_strndup(struct req *r, const char *s, size_t n)
{
	char *p = req_alloc(r, n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

static void req_free(struct req *r)
{
	while (r->scratch) {
		struct scratch *s = r->scratch;
		r->scratch = s->next;
		free(s);
	}
	mpw_free(&r->w);
	free(r);
}

void req_drop(struct req *r) { req_free(r); }

/* ---- frames and replies ---- */

void frame_begin(struct mpw *w, uint32_t id, const char *kind)
{
	static const uint8_t len[4];
	mpw_raw(w, len, 4);
	mpw_map(w, 3);
	mpw_str(w, "id");
	mpw_uint(w, id);
	mpw_str(w, "kind");
	mpw_str(w, kind);
	mpw_str(w, "data");
}

bool frame_end(struct mpw *w)
{
	if (w->oom || w->len < 4)
		return false;
	size_t n = w->len - 4;
	if (n > MAX_FRAME_BYTES)
		return false;
	w->p[0] = (uint8_t)(n >> 24);
	w->p[1] = (uint8_t)(n >> 16);
	w->p[2] = (uint8_t)(n >> 8);
	w->p[3] = (uint8_t)n;
	return true;
}

static void batch_store(struct batch *b, uint32_t index, struct mpw *w);

static void write_err(struct req *r, int err, const char *msg)
{
	struct mpw *w = &r->w;
	mpw_free(w);
	if (r->batch) {
		mpw_map(w, 1);
		mpw_str(w, "err");
	} else {
		frame_begin(w, r->id, "err");
	}
	mpw_map(w, 2);
	mpw_str(w, "errno");
	mpw_int(w, err);
	mpw_str(w, "message");
	mpw_str(w, msg);
}

static void req_finish(struct req *r)
{
	struct mpw *w = &r->w;
	if (r->batch) {
		if (w->oom)
			write_err(r, ENOMEM, strerror(ENOMEM));
		batch_store(r->batch, r->index, w);
	} else if (frame_end(w)) {
		host_send(r->gen, w->p, w->len);
		memset(w, 0, sizeof *w);
	} else {
		/* Out of memory, or a reply bigger than a frame may be (a huge batch): say so. */
		char msg[160];
		int e = w->oom ? ENOMEM : EMSGSIZE;
		if (w->oom)
			snprintf(msg, sizeof msg, "%s", strerror(ENOMEM));
		else
			snprintf(msg, sizeof msg, "reply of %zu bytes exceeds the frame limit of %u bytes",
				 w->len - 4, MAX_FRAME_BYTES);
		write_err(r, e, msg);
		if (frame_end(w)) {
			host_send(r->gen, w->p, w->len);
			memset(w, 0, sizeof *w);
		}
	}
	req_free(r);
}

struct mpw *ok_begin(struct req *r, uint32_t nfields)
{
	struct mpw *w = &r->w;
	mpw_free(w);
	if (r->batch) {
		mpw_map(w, 1);
		mpw_str(w, "ok");
	} else {
		frame_begin(w, r->id, "ok");
	}
	mpw_map(w, nfields);
	return w;
}

void ok_end(struct req *r) { req_finish(r); }

void ok_empty(struct req *r)
{
	ok_begin(r, 0);
	ok_end(r);
}

void reply_err(struct req *r, int err, const char *msg)
{
	write_err(r, err, msg);
	req_finish(r);
}

void reply_errno(struct req *r, int err) { reply_err(r, err, strerror(err)); }

void reply_errf(struct req *r, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	reply_err(r, err, msg);
}

/* ---- arguments (nil counts as absent: the host's encoder may write undefined as nil) ---- */

static mpv field(mpv d, const char *k)
{
	mpv v = mp_find(d, k);
	return v && mp_type(v) == MP_NIL ? NULL : v;
}

static bool missing(struct req *r, const char *k)
{
	reply_errf(r, EINVAL, "missing field `%s`", k);
	return false;
}

static bool wrong(struct req *r, const char *k, const char *what)
{
	reply_errf(r, EINVAL, "field `%s` must be %s", k, what);
	return false;
}

bool opt_u64(struct req *r, mpv d, const char *k, uint64_t *out, bool *has)
{
	mpv v = field(d, k);
	if (has)
		*has = v != NULL;
	if (!v)
		return true;
	return mp_get_u64(v, out) || wrong(r, k, "an unsigned integer");
}

bool arg_u64(struct req *r, mpv d, const char *k, uint64_t *out)
{
	bool has;
	if (!opt_u64(r, d, k, out, &has))
		return false;
	return has || missing(r, k);
}

bool arg_i64(struct req *r, mpv d, const char *k, int64_t *out)
{
	mpv v = field(d, k);
	if (!v)
		return missing(r, k);
	return mp_get_i64(v, out) || wrong(r, k, "a 64-bit integer");
}

bool opt_bool(struct req *r, mpv d, const char *k, bool *out)
{
	mpv v = field(d, k);
	if (!v)
		return true;
	return mp_get_bool(v, out) || wrong(r, k, "a boolean");
}

bool opt_cstr(struct req *r, mpv d, const char *k, char **out)
{
	const char *s;
	size_t n;
	mpv v = field(d, k);
	if (!v)
		return true;
	if (!mp_get_str(v, &s, &n))
		return wrong(r, k, "a string");
	if (memchr(s, 0, n))
		return wrong(r, k, "a string without NUL bytes");
	if (!(*out = req_strndup(r, s, n))) {
		reply_errno(r, ENOMEM);
		return false;
	}
	return true;
}

bool arg_cstr(struct req *r, mpv d, const char *k, char **out)
{
	*out = NULL;
	if (!opt_cstr(r, d, k, out))
		return false;
	return *out || missing(r, k);
}

bool opt_bytes(struct req *r, mpv d, const char *k, const uint8_t **p, size_t *n)
{
	mpv v = field(d, k);
	if (!v) {
		*p = (const uint8_t *)"";
		*n = 0;
		return true;
	}
	return mp_get_bytes(v, p, n) || wrong(r, k, "bytes (bin or str)");
}

bool arg_bytes(struct req *r, mpv d, const char *k, const uint8_t **p, size_t *n)
{
	if (!field(d, k))
		return missing(r, k);
	return opt_bytes(r, d, k, p, n);
}

bool opt_arr(struct req *r, mpv d, const char *k, mpv *out)
{
	mpv v = field(d, k);
	*out = NULL;
	if (!v)
		return true;
	if (mp_type(v) != MP_ARR)
		return wrong(r, k, "an array");
	*out = v;
	return true;
}

bool arg_arr(struct req *r, mpv d, const char *k, mpv *out)
{
	if (!opt_arr(r, d, k, out))
		return false;
	return *out || missing(r, k);
}

bool opt_map(struct req *r, mpv d, const char *k, mpv *out)
{
	mpv v = field(d, k);
	*out = NULL;
	if (!v)
		return true;
	if (mp_type(v) != MP_MAP)
		return wrong(r, k, "a map");
	*out = v;
	return true;
}

/* ---- dispatch ---- */

static void run_op(struct req *r, const char *kind, size_t klen, mpv data, bool in_batch)
{
	for (size_t k = 0; k < sizeof OPS_TABLE / sizeof OPS_TABLE[0]; k++) {
		const struct op *op = &OPS_TABLE[k];
		if (strlen(op->name) != klen || memcmp(op->name, kind, klen) != 0)
			continue;
		if (in_batch && (op->flags & F_NOBATCH))
			reply_errf(r, EINVAL, "`%s` is not allowed in a batch", op->name);
		else if ((op->flags & F_MAIN) && A.mode == MODE_WORKER)
			reply_errf(r, EINVAL, "`%s` is only valid on the main agent", op->name);
		else if ((op->flags & F_WORKER) && A.mode != MODE_WORKER)
			reply_errf(r, EINVAL, "`%s` is only valid in a worker", op->name);
		else
			op->fn(r, data);
		return;
	}
	reply_errf(r, EINVAL, "unknown op `%.*s`", (int)(klen > 64 ? 64 : klen), kind);
}

/* Internal: the main agent tells a worker that the host session changed. */
static void worker_reset_request(void)
{
	new_session();
	struct mpw w = { 0 };
	frame_begin(&w, 0, "_reset_ack");
	mpw_map(&w, 0);
	if (frame_end(&w))
		host_send(A.gen, w.p, w.len);
	else
		mpw_free(&w);
}

void host_frame(uint8_t *frame, size_t flen)
{
	const uint8_t *body = frame + 4;
	uint64_t id, wid;
	const char *kind;
	size_t klen;
	mpv v;

	/* 1. Envelope checks: anything we cannot answer is a bad frame. */
	if (!mp_check(body, flen)) {
		conn_bad_frame("frame is not valid msgpack");
		goto out;
	}
	if (mp_type(body) != MP_MAP) {
		conn_bad_frame("frame is not a map");
		goto out;
	}
	v = mp_find(body, "kind");
	if (!v || !mp_get_str(v, &kind, &klen)) {
		conn_bad_frame("frame has no string `kind`");
		goto out;
	}
	v = mp_find(body, "id");
	if (!v || !mp_get_u64(v, &id) || id > UINT32_MAX) {
		conn_bad_frame("frame has no valid `id`");
		goto out;
	}
	if (id == 0) {
		if (A.mode == MODE_WORKER && klen == 6 && memcmp(kind, "_reset", 6) == 0)
			worker_reset_request();
		else
			conn_bad_frame("frame has `id` 0, which is reserved for events");
		goto out;
	}

	/* 2. Relay to a worker: the frame goes as it is. */
	v = mp_find(body, "worker");
	if (v && mp_type(v) != MP_NIL && A.mode != MODE_WORKER) {
		if (mp_get_u64(v, &wid) && wid <= UINT32_MAX) {
			worker_relay((uint32_t)wid, (uint32_t)id, frame, flen);
			return;
		}
		struct req *r = req_new((uint32_t)id, A.gen, NULL, 0);
		if (r)
			reply_err(r, EINVAL, "field `worker` must be an unsigned integer");
		goto out;
	}

	/* 3. Run it here. */
	mpv data = mp_find(body, "data");
	if (!data || mp_type(data) == MP_NIL)
		data = EMPTY_MAP;
	struct req *r = req_new((uint32_t)id, A.gen, NULL, 0);
	if (!r)
		goto out;
	if (mp_type(data) != MP_MAP)
		reply_err(r, EINVAL, "field `data` must be a map");
	else
		run_op(r, kind, klen, data, false);
out:
	free(frame);
}

/* ---- batch: ops run in order; an op that waits (exec, sleep, ...) pauses the batch, not
 * the loop. The next op starts from batch_tick, never from inside another op's completion. */

static void batch_step(struct batch *b);

void op_batch(struct req *r, mpv d)
{
	mpv ops;
	if (!arg_arr(r, d, "ops", &ops))
		return;
	struct batch *b = calloc(1, sizeof *b);
	if (!b)
		goto oom;
	size_t len = (size_t)(mp_skip(ops) - ops);
	b->n = mp_count(ops);
	b->ops = malloc(len);
	b->results = calloc(b->n ? b->n : 1, sizeof *b->results);
	if (!b->ops || !b->results)
		goto oom;
	memcpy(b->ops, ops, len);
	b->cur = mp_items(b->ops);
	b->parent = r;
	b->next = A.batches;
	A.batches = b;
	batch_step(b);
	return;
oom:
	if (b) {
		free(b->ops);
		free(b->results);
		free(b);
	}
	reply_errno(r, ENOMEM);
}

static void batch_store(struct batch *b, uint32_t index, struct mpw *w)
{
	b->results[index] = *w;
	memset(w, 0, sizeof *w);
	b->waiting = false;
}

static void batch_finish(struct batch *b)
{
	struct mpw *w = ok_begin(b->parent, 1);
	mpw_str(w, "results");
	mpw_arr(w, b->n);
	for (uint32_t k = 0; k < b->n; k++) {
		mpw_raw(w, b->results[k].p, b->results[k].len);
		mpw_free(&b->results[k]);
	}
	ok_end(b->parent);
	b->parent = NULL;
	b->done = true;
}

static void batch_step(struct batch *b)
{
	if (b->running || b->waiting || b->done)
		return;
	b->running = true;
	while (!b->waiting && b->next_i < b->n) {
		mpv op = b->cur;
		b->cur = mp_skip(op);
		uint32_t i = b->next_i++;
		struct req *sub = req_new(b->parent->id, b->parent->gen, b, i);
		if (!sub) {
			struct mpw w = { 0 };
			mpw_map(&w, 1);
			mpw_str(&w, "err");
			mpw_map(&w, 2);
			mpw_str(&w, "errno");
			mpw_int(&w, ENOMEM);
			mpw_str(&w, "message");
			mpw_str(&w, strerror(ENOMEM));
			b->results[i] = w;
			continue;
		}
		b->waiting = true;
		const char *kind;
		size_t klen;
		mpv kv = mp_type(op) == MP_MAP ? mp_find(op, "kind") : NULL;
		mpv data = mp_type(op) == MP_MAP ? mp_find(op, "data") : NULL;
		if (!data || mp_type(data) == MP_NIL)
			data = EMPTY_MAP;
		if (mp_type(op) != MP_MAP)
			reply_err(sub, EINVAL, "a batch op must be a map {kind, data}");
		else if (!kv || !mp_get_str(kv, &kind, &klen))
			reply_err(sub, EINVAL, "missing field `kind`");
		else if (mp_type(data) != MP_MAP)
			reply_err(sub, EINVAL, "field `data` must be a map");
		else
			run_op(sub, kind, klen, data, true);
	}
	b->running = false;
	if (!b->waiting && b->next_i == b->n)
		batch_finish(b);
}

void batch_tick(int64_t now, int64_t *dl)
{
	struct batch **pp = &A.batches;
	while (*pp) {
		struct batch *b = *pp;
		uint32_t started = b->next_i;
		batch_step(b);
		/* An op started here may have set a timer in a module whose tick already ran in this
		 * iteration: go round once more before sleeping in poll. */
		if (b->next_i != started)
			dl_min(dl, now);
		if (b->done) {
			*pp = b->next;
			free(b->ops);
			free(b->results);
			free(b);
			continue;
		}
		pp = &b->next;
	}
}
