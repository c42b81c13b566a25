/* stream.c: credit-based byte streams (proc_stream, tail_file, fd_stream).
 *
 * A stream's id is the id of the request that opened it. It sends stream_data frames of at most
 * STREAM_CHUNK bytes and never more than its credit, and reads its source only while it has
 * credit and the host queue has room: a process writing into a streamed pipe blocks until the
 * host acknowledges. Three kinds of source:
 *   ST_PIPE  a process's stdout/stderr pipe (non-blocking, owned by the stream while attached)
 *   ST_TAIL  a regular file, read with pread at our own offset every TAIL_POLL_MS; never EOF
 *   ST_FD    anything else (FIFO, device, socket): poll for input, EOF ends the stream */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint8_t tmp[STREAM_CHUNK];

static struct stream *stream_new(struct req *r, enum stream_type type, int fd, uint64_t window)
{
	struct stream *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->id = r->id;
	s->gen = r->gen;
	s->type = type;
	s->fd = fd;
	s->credit = window;
	s->next = A.streams;
	A.streams = s;
	return s;
}

static struct stream *stream_find(uint64_t id)
{
	for (struct stream *s = A.streams; s; s = s->next)
		if (s->id == id && !s->dead && s->gen == A.gen)
			return s;
	return NULL;
}

static void emit_data(struct stream *s, const uint8_t *p, size_t n)
{
	struct mpw w = { 0 };
	frame_begin(&w, s->id, "stream_data");
	mpw_map(&w, 1);
	mpw_str(&w, "bytes");
	mpw_bin(&w, p, n);
	if (frame_end(&w))
		host_send(s->gen, w.p, w.len);
	else
		mpw_free(&w);
	s->credit -= n;
}

/* Ends the stream for the host (stream_end) and marks it for freeing. */
static void emit_end(struct stream *s)
{
	struct mpw w = { 0 };
	frame_begin(&w, s->id, "stream_end");
	if (s->err) {
		mpw_map(&w, 2);
		mpw_str(&w, "errno");
		mpw_int(&w, s->err);
		mpw_str(&w, "message");
		mpw_str(&w, strerror(s->err));
	} else {
		mpw_map(&w, 0);
	}
	if (frame_end(&w))
		host_send(s->gen, w.p, w.len);
	else
		mpw_free(&w);
	close_fd(&s->fd);
	stream_detach_owner(s);
	buf_free(&s->pend);
	s->dead = true;
}

/* A pipe stream going away before EOF hands the pipe back to its process, which captures
 * again (so dropping a stream never kills a process with SIGPIPE). */
void stream_detach_owner(struct stream *s)
{
	struct proc *p = s->owner;
	if (!p)
		return;
	struct outpipe *o = &p->out[s->which];
	if (s->fd >= 0) {
		o->fd = s->fd;
		o->streamed = false;
		s->fd = -1;
	}
	o->stream = NULL;
	s->owner = NULL;
}

/* Silent end (stream_close, new session): no frame. */
static void stream_kill(struct stream *s)
{
	if (s->dead)
		return;
	stream_detach_owner(s);
	close_fd(&s->fd);
	buf_free(&s->pend);
	s->dead = true;
}

void streams_drop_all(void)
{
	for (struct stream *s = A.streams; s; s = s->next)
		stream_kill(s);
}

static void tail_poll(struct stream *s, int64_t now)
{
	struct stat st;
	if (fstat(s->fd, &st) < 0) {
		s->err = errno;
		return;
	}
	/* Shrunk (truncated, rewritten): start over from the beginning like tail -F. Files that
	 * always report size 0 (/proc, /sys) never shrink, so they are simply read. */
	if ((int64_t)st.st_size < s->last_size)
		s->pos = 0;
	s->last_size = st.st_size;
	bool more = false;
	while (s->credit > 0 && host_room()) {
		size_t want = s->credit < STREAM_CHUNK ? (size_t)s->credit : STREAM_CHUNK;
		ssize_t n = pread(s->fd, tmp, want, (off_t)s->pos);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			s->err = errno;
			return;
		}
		if (n == 0)
			break;
		s->pos += (uint64_t)n;
		emit_data(s, tmp, (size_t)n);
		if ((size_t)n < want)
			break;
		more = true;
	}
	/* Blocked by credit or by the host queue with data left: look again as soon as allowed. */
	s->next_poll = more ? now : now + TAIL_POLL_MS;
}

void stream_tick(int64_t now, int64_t *dl)
{
	struct stream **pp = &A.streams;
	while (*pp) {
		struct stream *s = *pp;
		if (s->dead || s->gen != A.gen) {
			stream_kill(s);
			*pp = s->next;
			free(s);
			continue;
		}
		/* 1. What is owed first (a process's output captured before the stream attached). */
		while (s->pend_off < s->pend.len && s->credit > 0 && host_room()) {
			size_t n = s->pend.len - s->pend_off;
			if (n > STREAM_CHUNK)
				n = STREAM_CHUNK;
			if (n > s->credit)
				n = (size_t)s->credit;
			emit_data(s, s->pend.p + s->pend_off, n);
			s->pend_off += n;
		}
		bool owed = s->pend_off < s->pend.len;
		/* 2. Regular files are polled. */
		if (s->type == ST_TAIL && !owed && !s->err && s->credit > 0 && host_room()) {
			if (now >= s->next_poll)
				tail_poll(s, now);
			if (!s->err)
				dl_min(dl, s->next_poll);
		}
		/* 3. The end, once everything owed went out. */
		if (!owed && (s->eof || s->err) && A.conn.up)
			emit_end(s);
		pp = &s->next;
	}
}

static void on_stream_in(void *obj, int tag, short rev)
{
	(void)tag;
	struct stream *s = obj;
	if (s->dead || s->fd < 0 || s->credit == 0)
		return;
	if (rev & POLLNVAL) {
		s->err = EBADF;
		return;
	}
	size_t want = s->credit < STREAM_CHUNK ? (size_t)s->credit : STREAM_CHUNK;
	ssize_t n = s->type == ST_FD ? nb_read(s->fd, tmp, want) : read(s->fd, tmp, want);
	if (n > 0) {
		emit_data(s, tmp, (size_t)n);
	} else if (n == 0) {
		s->eof = true;
		close_fd(&s->fd);
		stream_detach_owner(s); /* the pipe is done: the process does not wait for it */
	} else if (errno != EAGAIN && errno != EINTR) {
		s->err = errno;
		close_fd(&s->fd);
		stream_detach_owner(s);
	}
}

void stream_pollfds(void)
{
	for (struct stream *s = A.streams; s; s = s->next) {
		if (s->dead || s->fd < 0 || s->type == ST_TAIL || s->eof || s->err)
			continue;
		if (s->credit == 0 || s->pend_off < s->pend.len || !host_room())
			continue;
		ps_add(s->fd, POLLIN, on_stream_in, s, 0);
	}
}

/* ---- ops ---- */

static bool get_window(struct req *r, mpv d, uint64_t *window)
{
	*window = 0;
	return arg_u64(r, d, "window", window);
}

void op_proc_stream(struct req *r, mpv d)
{
	uint64_t h, window;
	char *which;
	if (!arg_u64(r, d, "handle", &h) || !arg_cstr(r, d, "which", &which) || !get_window(r, d, &window))
		return;
	int k = strcmp(which, "stdout") == 0 ? 0 : strcmp(which, "stderr") == 0 ? 1 : -1;
	if (k < 0) {
		reply_err(r, EINVAL, "field `which` must be \"stdout\" or \"stderr\"");
		return;
	}
	struct proc *p = proc_by_handle(h);
	if (!p) {
		reply_errno(r, ESRCH);
		return;
	}
	struct outpipe *o = &p->out[k];
	if (o->streamed) {
		reply_errno(r, EBUSY);
		return;
	}
	struct stream *s = stream_new(r, ST_PIPE, o->fd, window);
	if (!s) {
		reply_errno(r, ENOMEM);
		return;
	}
	/* What was captured so far goes first, then the pipe; the pipe is the stream's now. */
	s->pend = o->cap;
	memset(&o->cap, 0, sizeof o->cap);
	if (o->fd < 0) {
		s->eof = true;
	} else {
		s->owner = p;
		s->which = k;
		o->stream = s;
	}
	o->fd = -1;
	o->streamed = true;
	ok_empty(r);
}

void op_tail_file(struct req *r, mpv d)
{
	char *path;
	uint64_t window, start_at = 0;
	int64_t back = 0;
	int start = 0; /* 0 beginning, 1 end, 2 offset, 3 that many bytes before the end */
	if (!arg_cstr(r, d, "path", &path) || !get_window(r, d, &window))
		return;
	mpv sv = mp_find(d, "start");
	if (sv && mp_type(sv) != MP_NIL) {
		if (mp_str_eq(sv, "beginning") || mp_str_eq(sv, "start"))
			start = 0;
		else if (mp_str_eq(sv, "end"))
			start = 1;
		else if (mp_get_u64(sv, &start_at))
			start = 2;
		else if (mp_get_i64(sv, &back) && back < 0)
			start = 3;
		else {
			reply_err(r, EINVAL, "field `start` must be \"beginning\", \"end\" or an integer offset");
			return;
		}
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		reply_errno(r, errno);
		return;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		reply_errno(r, e);
		return;
	}
	bool reg = S_ISREG(st.st_mode);
	struct stream *s = stream_new(r, reg ? ST_TAIL : ST_FD, fd, window);
	if (!s) {
		close(fd);
		reply_errno(r, ENOMEM);
		return;
	}
	if (reg) {
		s->pos = start == 1 ? (uint64_t)st.st_size : start == 2 ? start_at : 0;
		if (start == 3)
			s->pos = st.st_size + back > 0 ? (uint64_t)(st.st_size + back) : 0;
		s->last_size = st.st_size;
	} else if (start == 1 || start == 3) {
		lseek(fd, start == 3 ? (off_t)back : 0, SEEK_END); /* meaningful for seekable devices only */
	} else if (start == 2) {
		lseek(fd, (off_t)start_at, SEEK_SET);
	}
	ok_empty(r);
}

void op_fd_stream(struct req *r, mpv d)
{
	int fd;
	uint64_t window;
	struct stat st;
	if (!arg_fd(r, d, "handle", &fd) || !get_window(r, d, &window))
		return;
	if (fstat(fd, &st) < 0) {
		reply_errno(r, errno);
		return;
	}
	/* A duplicate, so that `close` on the handle and the stream do not interfere. */
	int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (nfd < 0) {
		reply_errno(r, errno);
		return;
	}
	bool reg = S_ISREG(st.st_mode);
	struct stream *s = stream_new(r, reg ? ST_TAIL : ST_FD, nfd, window);
	if (!s) {
		close(nfd);
		reply_errno(r, ENOMEM);
		return;
	}
	if (reg) {
		off_t pos = lseek(fd, 0, SEEK_CUR);
		s->pos = pos > 0 ? (uint64_t)pos : 0;
		s->last_size = st.st_size;
	}
	ok_empty(r);
}

void op_stream_ack(struct req *r, mpv d)
{
	uint64_t id = 0, bytes = 0;
	mpv v = mp_find(d, "stream"), b = mp_find(d, "bytes");
	/* No reply, not even for a malformed ack: the host does not wait for one. */
	if (v && b && mp_get_u64(v, &id) && mp_get_u64(b, &bytes)) {
		struct stream *s = stream_find(id);
		if (s) {
			s->credit = s->credit + bytes < s->credit ? UINT64_MAX : s->credit + bytes;
			s->next_poll = 0;
		}
	}
	req_drop(r);
}

void op_stream_close(struct req *r, mpv d)
{
	uint64_t id;
	if (!arg_u64(r, d, "stream", &id))
		return;
	struct stream *s = stream_find(id);
	if (s)
		stream_kill(s); /* freed by the next tick; no frame for it after this reply */
	ok_empty(r);
}
