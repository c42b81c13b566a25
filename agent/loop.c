/* loop.c: the single poll loop, signals through a self-pipe, and the host connection.
 *
 * Each iteration: 1. ticks (timeouts, completions, stream output), 2. flush to the host,
 * 3. rebuild the poll set, 4. poll until the nearest deadline, 5. dispatch. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- signals: handlers only write a byte; the loop does the work ---- */

static void on_signal(int sig)
{
	int e = errno;
	char c = sig == SIGCHLD ? 'C' : 'I';
	(void)!write(A.sigpipe[1], &c, 1);
	errno = e;
}

void signals_init(void)
{
	if (pipe2(A.sigpipe, O_CLOEXEC | O_NONBLOCK) < 0)
		fatal("pipe2: %s", strerror(errno));
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGIO, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	crash_init(); /* crash.c: real faults park PID 1, signals from user processes are ignored */
}

static void reap_all(void)
{
	int st;
	pid_t pid;
	/* As PID 1 this also reaps orphans: they match nothing and are dropped. */
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (!proc_on_exit(pid, st))
			worker_on_exit(pid, st);
	}
}

static void on_sigpipe(void *obj, int tag, short rev)
{
	(void)obj, (void)tag, (void)rev;
	uint8_t b[64];
	ssize_t n;
	bool chld = false;
	while ((n = read(A.sigpipe[0], b, sizeof b)) > 0) {
		for (ssize_t k = 0; k < n; k++) {
			if (b[k] == 'C')
				chld = true;
			else
				A.conn.check_port = true;
		}
	}
	if (chld)
		reap_all();
}

/* ---- sessions ---- */

/* A new host session (disconnect or hello): requests in flight from the old one lose their
 * replies, and its streams end silently. Processes, files and workers stay. */
void new_session(void)
{
	A.gen++;
	streams_drop_all();
	if (A.mode != MODE_WORKER)
		workers_reset();
}

bool host_room(void) { return A.conn.up && A.conn.q.bytes < OUTQ_HIGH; }

void host_send(uint64_t gen, uint8_t *p, size_t len)
{
	if (!A.conn.up || gen != A.gen) {
		free(p);
		return;
	}
	outq_push(&A.conn.q, p, len);
}

void host_send_raw(uint8_t *p, size_t len)
{
	if (!A.conn.up) {
		free(p);
		return;
	}
	outq_push(&A.conn.q, p, len);
}

static void conn_down(void)
{
	struct conn *c = &A.conn;
	if (c->kind == CONN_WORKER)
		_exit(0); /* the main agent is gone; nobody can talk to this worker again */
	c->up = false;
	c->discard = false;
	reader_reset(&c->rd);
	outq_clear(&c->q);
	if (c->kind == CONN_LISTEN)
		close_fd(&c->fd);
	else
		c->recheck_ms = now_ms() + PORT_RECHECK_MS;
	new_session();
}

void conn_remember_fd(void)
{
	struct conn *c = &A.conn;
	struct stat st;
	if (c->fd >= 0 && fstat(c->fd, &st) == 0) {
		c->fd_dev = st.st_dev;
		c->fd_ino = st.st_ino;
	}
}

static void send_agent_error(const char *msg)
{
	struct mpw w = { 0 };
	frame_begin(&w, 0, "agent_error");
	mpw_map(&w, 1);
	mpw_str(&w, "message");
	mpw_str(&w, msg);
	if (frame_end(&w))
		host_send(A.gen, w.p, w.len);
	else
		mpw_free(&w);
}

/* The port came back after conn_lost(): host-to-guest bytes that were buffered in the guest
 * went with the close, so input may resume mid-frame. Say so and drop input until a hello. */
static void port_back(void)
{
	struct conn *c = &A.conn;
	c->lost = false;
	c->discard = true;
	reader_reset(&c->rd);
	send_agent_error(c->lost_msg);
}

/* Our descriptor to the host was closed or replaced by something the agent ran for the host (a
 * layer-0 close(2) or dup2(2) on it). The number may already name another file: forget it,
 * never close it. A port is opened again at once (the host never saw a disconnect: QEMU keeps
 * its chardev), what is queued for the host is kept, and the host is told with agent_error. */
static void conn_lost(const char *how)
{
	struct conn *c = &A.conn;
	int fd = c->fd;
	c->fd = -1;
	if (c->kind == CONN_WORKER) {
		logmsg("worker %d: its channel to the main agent (fd %d) %s; exiting", (int)A.pid, fd, how);
		_exit(EXIT_CONN_LOST);
	}
	reader_reset(&c->rd);
	if (c->kind == CONN_LISTEN) {
		logmsg("the host connection (fd %d) %s; waiting for the next host", fd, how);
		c->up = false;
		c->discard = false;
		outq_clear(&c->q);
		new_session();
		return;
	}
	snprintf(c->lost_msg, sizeof c->lost_msg,
		 "the agent's port %s (fd %d) %s inside the guest; the agent reopened it, and input in flight "
		 "was lost", A.port_desc, fd, how);
	logmsg("%s", c->lost_msg);
	c->lost = true;
	c->fd = port_reopen();
	if (c->fd < 0) {
		logmsg("reopening the port: %s; trying again every %d ms", strerror(errno), PORT_REOPEN_MS);
		c->up = false;
		c->recheck_ms = now_ms() + PORT_REOPEN_MS;
		return;
	}
	conn_remember_fd();
	if (c->up)
		port_back();
	else
		c->recheck_ms = 0; /* conn_tick looks for the host, then reports */
}

void conn_check(void)
{
	struct conn *c = &A.conn;
	struct stat st;
	if (c->fd < 0)
		return;
	if (fstat(c->fd, &st) < 0)
		conn_lost("was closed");
	else if (st.st_dev != c->fd_dev || st.st_ino != c->fd_ino)
		conn_lost("was replaced by another file");
}

static void bad_frame(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runs every complete frame staged; while discarding, skips to the next hello first. */
static void pump_input(void)
{
	struct conn *c = &A.conn;
	uint8_t *f;
	size_t len;
	uint32_t bad;
	while (c->up) {
		if (c->discard) {
			if (!reader_resync_hello(&c->rd))
				return;
			c->discard = false;
		}
		int rc = reader_next(&c->rd, &f, &len, &bad);
		if (rc == RD_AGAIN)
			return;
		if (rc == RD_FRAME)
			host_frame(f, len);
		else if (rc == RD_TOOBIG)
			bad_frame("frame of %u bytes exceeds the limit of %u bytes", bad, MAX_FRAME_BYTES);
		else
			bad_frame("cannot allocate a frame of %u bytes", bad);
	}
}

static void bad_frame(const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	send_agent_error(msg);
	A.conn.discard = true;
	reader_drop_frame(&A.conn.rd); /* the rest of what was read is searched for a hello */
}

/* Called by req.c for a frame that cannot be answered. */
void conn_bad_frame(const char *msg) { bad_frame("%s", msg); }

static bool host_input_ok(void) { return A.conn.q.bytes < OUTQ_HIGH && !workers_backlogged(); }

static void on_conn(void *obj, int tag, short rev)
{
	(void)obj, (void)tag;
	struct conn *c = &A.conn;
	if (!c->up)
		return;
	if (rev & POLLNVAL) {
		conn_lost("was closed");
		return;
	}
	if ((rev & POLLOUT) && outq_flush(&c->q, c->fd) < 0) {
		if (errno == EBADF)
			conn_lost("was closed");
		else
			conn_down();
		return;
	}
	if (rev & POLLIN) {
		size_t total = 0;
		/* Several reads per wake-up: a virtio port hands out at most a page per read. */
		while (c->up && total < (1u << 20) && host_input_ok()) {
			ssize_t n = reader_fill(&c->rd, c->fd);
			if (n == 0) {
				conn_down();
				return;
			}
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					break;
				if (errno == EBADF)
					conn_lost("was closed");
				else
					conn_down();
				return;
			}
			total += (size_t)n;
			c->got_input = true;
			pump_input();
		}
	} else if (rev & (POLLHUP | POLLERR)) {
		conn_down();
	}
}

static void on_accept(void *obj, int tag, short rev)
{
	(void)obj, (void)tag, (void)rev;
	int fd = accept4(A.conn.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	A.conn.fd = fd;
	A.conn.up = true;
	A.conn.discard = false;
	reader_reset(&A.conn.rd);
	conn_remember_fd();
}

static void conn_tick(int64_t now, int64_t *dl)
{
	struct conn *c = &A.conn;
	/* A host does not stop in the middle of a frame; one that did is gone or confused. Only
	 * time spent waiting for it counts (not an inline syscall that kept us busy), and the main
	 * agent feeding a worker is trusted. */
	if (c->up && !c->discard && c->kind != CONN_WORKER && reader_partial(&c->rd)) {
		if (c->stall_ms >= FRAME_STALL_MS)
			bad_frame("frame incomplete for %d ms; dropping it", FRAME_STALL_MS);
		else
			dl_min(dl, now + (FRAME_STALL_MS - c->stall_ms));
	}
	if (c->kind != CONN_PORT || c->up)
		return;
	/* While the host is away the port polls POLLHUP without end: look only now and then,
	 * or when SIGIO says the host side changed. */
	if (c->check_port || now >= c->recheck_ms) {
		c->check_port = false;
		if (c->fd < 0 && (c->fd = port_reopen()) < 0) {
			c->recheck_ms = now + PORT_REOPEN_MS;
			dl_min(dl, c->recheck_ms);
			return;
		}
		if (c->lost)
			conn_remember_fd();
		struct pollfd pf = { .fd = c->fd, .events = POLLIN };
		if (poll(&pf, 1, 0) >= 0 && !(pf.revents & (POLLHUP | POLLNVAL))) {
			c->up = true;
			c->discard = false;
			reader_reset(&c->rd);
			if (c->lost)
				port_back();
			return;
		}
		c->recheck_ms = now + PORT_RECHECK_MS;
	}
	dl_min(dl, c->recheck_ms);
}

static void conn_pollfds(void)
{
	struct conn *c = &A.conn;
	if (c->kind == CONN_LISTEN && !c->up) {
		ps_add(c->lfd, POLLIN, on_accept, NULL, 0);
		return;
	}
	if (!c->up)
		return;
	short ev = 0;
	if (host_input_ok())
		ev |= POLLIN;
	if (c->q.head)
		ev |= POLLOUT;
	ps_add(c->fd, ev, on_conn, NULL, 0);
}

/* Called after each poll and dispatch: the poll's duration counts as stall time only while a
 * frame is half-received and nothing arrived. */
static void account_stall(void)
{
	struct conn *c = &A.conn;
	if (c->got_input || !reader_partial(&c->rd))
		c->stall_ms = 0;
	else
		c->stall_ms += ps_last_wait_ms();
}

static void leave_if_exiting(void)
{
	if (!A.exiting)
		return;
	/* A worker answered `exit`: deliver what is queued, then go. */
	set_nonblock(A.conn.fd, false);
	outq_flush(&A.conn.q, A.conn.fd);
	_exit(0);
}

void serve(void)
{
	for (;;) {
		int64_t now = now_ms();
		int64_t dl = NO_DEADLINE;

		/* 1. Timers and completions. */
		conn_tick(now, &dl);
		proc_tick(now, &dl);
		fdop_tick(now, &dl);
		sleep_tick(now, &dl);
		worker_tick(now, &dl);
		batch_tick(now, &dl);
		stream_tick(now, &dl);
		power_tick(now, &dl);

		/* 2. Write what we can now rather than after the next poll. */
		/* A write error is left to on_conn: the next poll reports it. */
		if (A.conn.up && A.conn.q.head)
			outq_flush(&A.conn.q, A.conn.fd);
		leave_if_exiting();

		/* 3. Poll set. */
		ps_reset();
		ps_add(A.sigpipe[0], POLLIN, on_sigpipe, NULL, 0);
		conn_pollfds();
		proc_pollfds();
		stream_pollfds();
		fdop_pollfds();
		worker_pollfds();
		power_pollfds();

		/* 4 and 5. */
		int timeout = -1;
		if (dl != NO_DEADLINE) {
			int64_t t = dl - now_ms();
			timeout = t < 0 ? 0 : t > 60000 ? 60000 : (int)t;
		}
		A.conn.got_input = false;
		ps_run(timeout);
		account_stall();
	}
}
