/* worker.c: worker processes and the relay to them.
 *
 * A worker is forked from the main agent and serves the same protocol over a socketpair, with
 * empty state. The main agent forwards every frame that carries `worker: n` as raw bytes and
 * copies the worker's frames back as raw bytes. When the host session changes, the main agent
 * sends the worker an internal `_reset` (id 0) and drops the worker's frames until the worker's
 * `_reset_ack`: replies to the old session never reach the new one. A worker has exited (and
 * `worker_exit` goes out) once it was reaped and its socket reached EOF, so its last replies
 * (`exit`'s) are relayed before the event. */
#include "agent.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct worker *find_worker(uint64_t id)
{
	for (struct worker *w = A.workers; w; w = w->next)
		if (w->id == id && !w->joined)
			return w;
	return NULL;
}

bool workers_backlogged(void)
{
	for (struct worker *w = A.workers; w; w = w->next)
		if (w->q.bytes >= OUTQ_HIGH)
			return true;
	return false;
}

static void push_internal(struct worker *w, const char *kind)
{
	struct mpw m = { 0 };
	frame_begin(&m, 0, kind);
	mpw_map(&m, 0);
	if (frame_end(&m))
		outq_push(&w->q, m.p, m.len);
	else
		mpw_free(&m);
}

void workers_reset(void)
{
	for (struct worker *w = A.workers; w; w = w->next) {
		if (w->sock < 0)
			continue;
		push_internal(w, "_reset");
		w->discarding = true;
	}
}

void worker_relay(uint32_t wid, uint32_t id, uint8_t *frame, size_t flen)
{
	struct worker *w = find_worker(wid);
	if (!w || w->sock < 0 || w->reaped) {
		free(frame);
		struct req *r = req_new(id, A.gen, NULL, 0);
		if (r)
			reply_errno(r, ESRCH);
		return;
	}
	outq_push(&w->q, frame, flen + 4);
	if (outq_flush(&w->q, w->sock) < 0)
		outq_clear(&w->q); /* it is going away; EOF on its socket will tell */
}

static void worker_eof(struct worker *w)
{
	close_fd(&w->sock);
	w->eof = true;
	reader_reset(&w->rd);
	free(w->rd.stage);
	w->rd.stage = NULL;
	outq_clear(&w->q);
}

static void worker_frame(struct worker *w, uint8_t *frame, size_t flen)
{
	if (w->discarding) {
		const uint8_t *body = frame + 4;
		mpv kind = mp_check(body, flen) ? mp_find(body, "kind") : NULL;
		if (kind && mp_str_eq(kind, "_reset_ack"))
			w->discarding = false;
		free(frame);
		return;
	}
	host_send_raw(frame, flen + 4);
}

static void on_worker(void *obj, int tag, short rev)
{
	(void)tag;
	struct worker *w = obj;
	if (w->sock < 0)
		return;
	if (rev & POLLNVAL) {
		/* A layer-0 close(2) on its socket: nobody can reach it any more. Its number may name
		 * another file by now, so it is forgotten, not closed. */
		logmsg("worker %u: its socket (fd %d) was closed under the agent; killing it", w->id, w->sock);
		w->sock = -1;
		kill(w->pid, SIGKILL);
		worker_eof(w);
		return;
	}
	if ((rev & POLLOUT) && outq_flush(&w->q, w->sock) < 0)
		outq_clear(&w->q);
	if (!(rev & (POLLIN | POLLHUP | POLLERR)))
		return;
	size_t total = 0;
	while (w->sock >= 0 && total < (1u << 20)) {
		ssize_t n = reader_fill(&w->rd, w->sock);
		if (n == 0) {
			worker_eof(w);
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				worker_eof(w);
			return;
		}
		total += (size_t)n;
		uint8_t *f;
		size_t len;
		uint32_t bad;
		int rc;
		while ((rc = reader_next(&w->rd, &f, &len, &bad)) == RD_FRAME)
			worker_frame(w, f, len);
		if (rc != RD_AGAIN) {
			logmsg("worker %u sent a bad frame (%u bytes); dropping its connection", w->id, bad);
			kill(w->pid, SIGKILL);
			worker_eof(w);
			return;
		}
	}
}

bool worker_on_exit(pid_t pid, int wstatus)
{
	for (struct worker *w = A.workers; w; w = w->next) {
		if (w->pid == pid && !w->reaped) {
			w->reaped = true;
			w->wstatus = wstatus;
			w->reap_ms = now_ms();
			return true;
		}
	}
	return false;
}

static void reply_join(struct req *r, struct worker *w)
{
	struct mpw *m = ok_begin(r, 3);
	put_exitinfo(m, true, w->wstatus, w->timed_out);
	ok_end(r);
}

void worker_tick(int64_t now, int64_t *dl)
{
	struct worker **pp = &A.workers;
	while (*pp) {
		struct worker *w = *pp;
		/* 1. join timeouts kill the worker. */
		if (!w->reaped && waiters_expired(w->joiners, now, dl) && !w->timed_out) {
			w->timed_out = true;
			kill(w->pid, SIGKILL);
		}
		/* 2. Reaped but the socket still open (a child of its holds it): give it a moment. */
		if (w->reaped && !w->eof) {
			if (now >= w->reap_ms + GRACE_MS)
				worker_eof(w);
			else
				dl_min(dl, w->reap_ms + GRACE_MS);
		}
		/* 3. Exited: tell the host once, answer joiners. */
		if (w->reaped && w->eof && !w->exit_sent) {
			w->exit_sent = true;
			struct mpw m = { 0 };
			frame_begin(&m, 0, "worker_exit");
			mpw_map(&m, 4);
			mpw_str(&m, "worker");
			mpw_uint(&m, w->id);
			put_exitinfo(&m, true, w->wstatus, w->timed_out);
			if (frame_end(&m))
				host_send(A.gen, m.p, m.len);
			else
				mpw_free(&m);
		}
		if (w->exit_sent && w->joiners) {
			while (w->joiners) {
				struct waiter *j = w->joiners;
				w->joiners = j->next;
				reply_join(j->r, w);
				free(j);
			}
			w->joined = true;
		}
		if (w->joined) {
			*pp = w->next;
			worker_eof(w);
			free(w);
			continue;
		}
		pp = &w->next;
	}
}

void worker_pollfds(void)
{
	for (struct worker *w = A.workers; w; w = w->next) {
		if (w->sock < 0)
			continue;
		short ev = 0;
		if (A.conn.q.bytes < OUTQ_HIGH)
			ev |= POLLIN;
		if (w->q.head)
			ev |= POLLOUT;
		ps_add(w->sock, ev, on_worker, w, 0);
	}
}

/* ---- the worker process ---- */

static void __attribute__((noreturn)) worker_main(int sock)
{
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGIO);
	sigprocmask(SIG_BLOCK, &block, &old);

	/* 1. Nothing of the main agent's survives: descriptors closed, state forgotten. The heap
	 * it inherited is left alone (copy-on-write, never touched again). */
	close_all_except(sock, A.log_fd);
	A.mode = MODE_WORKER;
	A.is_init = false;
	A.pid = getpid();
	A.procs = NULL;
	A.streams = NULL;
	A.workers = NULL;
	A.sleepers = NULL;
	A.fdops = NULL;
	A.batches = NULL;
	A.next_handle = 1;
	A.next_worker = 1;
	A.exiting = false;
	A.npower = 0;
	A.poweroff_ms = 0;
	memset(&A.conn, 0, sizeof A.conn);
	A.conn.kind = CONN_WORKER;
	A.conn.fd = sock;
	A.conn.lfd = -1;
	A.conn.up = true;
	set_nonblock(sock, true);
	conn_remember_fd();

	/* 2. A self-pipe of its own, then signals again. */
	A.sigpipe[0] = A.sigpipe[1] = -1;
	signals_init();
	sigprocmask(SIG_SETMASK, &old, NULL);
	serve();
}

void op_spawn_worker(struct req *r, mpv d)
{
	(void)d;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		reply_errno(r, errno);
		return;
	}
	struct worker *w = calloc(1, sizeof *w);
	if (!w) {
		close(sv[0]);
		close(sv[1]);
		reply_errno(r, ENOMEM);
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(sv[0]);
		close(sv[1]);
		free(w);
		reply_errno(r, e);
		return;
	}
	if (pid == 0)
		worker_main(sv[1]);
	close(sv[1]);
	set_nonblock(sv[0], true);
	w->id = A.next_worker++;
	w->pid = pid;
	w->sock = sv[0];
	w->next = A.workers;
	A.workers = w;
	struct mpw *m = ok_begin(r, 2);
	mpw_str(m, "worker");
	mpw_uint(m, w->id);
	mpw_str(m, "pid");
	mpw_int(m, pid);
	ok_end(r);
}

void op_worker_join(struct req *r, mpv d)
{
	uint64_t id, tmo;
	bool has;
	if (!arg_u64(r, d, "worker", &id) || !opt_u64(r, d, "timeout_ms", &tmo, &has))
		return;
	struct worker *w = find_worker(id);
	if (!w) {
		reply_errno(r, ESRCH);
		return;
	}
	struct waiter *j = calloc(1, sizeof *j);
	if (!j) {
		reply_errno(r, ENOMEM);
		return;
	}
	j->r = r;
	j->deadline = has ? now_ms() + (int64_t)(tmo > INT32_MAX ? INT32_MAX : tmo) : NO_DEADLINE;
	j->next = w->joiners;
	w->joiners = j;
	/* worker_tick answers, at once if it has already exited. */
}

void op_exit(struct req *r, mpv d)
{
	(void)d;
	ok_empty(r);
	A.exiting = true;
}
