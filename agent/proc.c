/* proc.c: child processes (exec, spawn, wait, stdin, signals).
 *
 * A child gets its own process group and three O_CLOEXEC pipes; the child-side ends are closed
 * in the parent right after fork, so only the child (and whatever it hands them to) holds them.
 * exec failure comes back through a fourth CLOEXEC pipe as an errno. A process is complete when
 * it was reaped and both output pipes reached EOF, or GRACE_MS after it was reaped (a
 * backgrounded grandchild may keep a pipe open forever). */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct launch {
	char **argv;
	char **envp;
	const char *cwd;
	const char *path; /* PATH used to find argv[0] */
};

/* ---- launching ---- */

static int exec_search(char **argv, char **envp, const char *path)
{
	if (strchr(argv[0], '/')) {
		execve(argv[0], argv, envp);
		return errno;
	}
	size_t alen = strlen(argv[0]);
	bool eacces = false;
	const char *p = path;
	for (;;) {
		const char *end = strchrnul(p, ':');
		size_t dlen = (size_t)(end - p);
		char full[4096];
		if (dlen + 1 + alen + 1 <= sizeof full) {
			if (dlen == 0) {
				full[0] = '.';
				dlen = 1;
			} else {
				memcpy(full, p, dlen);
			}
			full[dlen] = '/';
			memcpy(full + dlen + 1, argv[0], alen + 1);
			/* A failed execve builds and drops a whole mm (slow under TCG); a failed
			 * access is a path walk. */
			if (access(full, F_OK) == 0)
				execve(full, argv, envp);
			switch (errno) {
			case EACCES:
				eacces = true;
				break;
			case ENOENT: case ENOTDIR: case ENAMETOOLONG: case ELOOP: case ESTALE:
				break;
			default:
				return errno;
			}
		}
		if (!*end)
			break;
		p = end + 1;
	}
	return eacces ? EACCES : ENOENT;
}

/* Signals the agent handles or ignores. Handled ones would reset at exec anyway, but in the
 * vfork child a handler must not run before exec; an ignored one would stay ignored. */
/* Set on the errno a launch reports when the child could not chdir to the cwd. */
#define LAUNCH_CWD_FAILED 0x40000000

static const int kChangedSignals[] = { SIGCHLD, SIGIO, SIGPIPE, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };

/* Runs in a vfork child (sharing the agent's memory until exec): touch nothing but locals
 * and syscalls, and leave only through exec or _exit. */
static void __attribute__((noreturn)) child(struct launch *L, int in, int out, int err, int ep,
					    const sigset_t *mask)
{
	int e;
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	for (size_t k = 0; k < sizeof kChangedSignals / sizeof kChangedSignals[0]; k++)
		sigaction(kChangedSignals[k], &dfl, NULL);
	sigprocmask(SIG_SETMASK, mask, NULL);
	setpgid(0, 0);
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		goto fail;
	if (L->cwd && chdir(L->cwd) < 0) {
		e = errno | LAUNCH_CWD_FAILED;
		(void)!write(ep, &e, sizeof e);
		_exit(127);
	}
	errno = exec_search(L->argv, L->envp, L->path);
fail:
	e = errno;
	(void)!write(ep, &e, sizeof e);
	_exit(127);
}

/* Returns 0 and fills p, or an errno (the child's exec errno when exec failed; with
 * LAUNCH_CWD_FAILED set when chdir to the cwd failed, so the reply can name the directory). */
static int launch(struct launch *L, struct proc *p)
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, ep[2] = { -1, -1 };
	int e = 0;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
	    pipe2(ep, O_CLOEXEC) < 0) {
		e = errno;
		goto fail;
	}
	/* vfork: no page-table copy, and the parent resumes once the child has exec'd or failed.
	 * Signals stay blocked meanwhile so that no handler runs in the child. */
	sigset_t all, old, none;
	sigfillset(&all);
	sigemptyset(&none);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid_t pid = vfork();
	if (pid == 0)
		child(L, in[0], out[1], err[1], ep[1], &none);
	e = pid < 0 ? errno : 0;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		goto fail;
	setpgid(pid, pid); /* also here: a kill(-pid) right after spawn must find the group */
	close_fd(&in[0]);
	close_fd(&out[1]);
	close_fd(&err[1]);
	close_fd(&ep[1]);
	int ce;
	ssize_t n;
	do
		n = read(ep[0], &ce, sizeof ce);
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof ce) {
		int st;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		e = ce;
		goto fail;
	}
	close_fd(&ep[0]);
	set_nonblock(in[1], true);
	set_nonblock(out[0], true);
	set_nonblock(err[0], true);
	p->pid = pid;
	p->in_fd = in[1];
	p->out[0].fd = out[0];
	p->out[1].fd = err[0];
	return 0;
fail:
	close_fd(&in[0]), close_fd(&in[1]), close_fd(&out[0]), close_fd(&out[1]);
	close_fd(&err[0]), close_fd(&err[1]), close_fd(&ep[0]), close_fd(&ep[1]);
	return e ? e : EIO;
}

/* ---- lookups and exit descriptions ---- */

struct proc *proc_by_handle(uint64_t handle)
{
	if (handle == 0)
		return NULL;
	for (struct proc *p = A.procs; p; p = p->next)
		if (p->handle == handle && !p->waited && !p->released)
			return p;
	return NULL;
}

static bool get_proc(struct req *r, mpv d, struct proc **out)
{
	uint64_t h;
	if (!arg_u64(r, d, "handle", &h))
		return false;
	if (!(*out = proc_by_handle(h))) {
		reply_errno(r, ESRCH);
		return false;
	}
	return true;
}

void put_exitinfo(struct mpw *w, bool reaped, int st, bool timed_out)
{
	const char *status = "running";
	int code = 0, sig = 0;
	if (reaped) {
		if (WIFEXITED(st)) {
			status = "exited";
			code = WEXITSTATUS(st);
		} else if (WIFSIGNALED(st)) {
			status = "signalled";
			sig = WTERMSIG(st);
		}
		if (timed_out)
			status = "timed_out";
	}
	mpw_str(w, "status");
	mpw_str(w, status);
	mpw_str(w, "code");
	mpw_int(w, code);
	mpw_str(w, "signal");
	mpw_int(w, sig);
}

static void reply_result(struct req *r, struct proc *p)
{
	struct mpw *w = ok_begin(r, 7);
	if (mpw_reserve(w, p->out[0].cap.len + p->out[1].cap.len + 256)) {
		put_exitinfo(w, p->reaped, p->wstatus, p->timed_out);
		mpw_str(w, "stdout");
		mpw_bin(w, p->out[0].cap.p, p->out[0].cap.len);
		mpw_str(w, "stderr");
		mpw_bin(w, p->out[1].cap.p, p->out[1].cap.len);
		mpw_str(w, "stdout_truncated");
		mpw_bool(w, p->out[0].truncated);
		mpw_str(w, "stderr_truncated");
		mpw_bool(w, p->out[1].truncated);
	}
	ok_end(r);
}

static void kill_group(struct proc *p, int sig)
{
	if (kill(-p->pid, sig) < 0)
		kill(p->pid, sig);
}

static bool add_waiter(struct waiter **list, struct req *r, int64_t deadline)
{
	struct waiter *w = calloc(1, sizeof *w);
	if (!w)
		return false;
	w->r = r;
	w->deadline = deadline;
	w->next = *list;
	*list = w;
	return true;
}

/* ---- output and input pipes ---- */

static void on_out(void *obj, int which, short rev)
{
	(void)rev;
	struct proc *p = obj;
	struct outpipe *o = &p->out[which];
	static uint8_t sink[65536];
	/* Bounded per wake-up so one chatty child cannot starve the rest. */
	for (int k = 0; k < 16 && o->fd >= 0; k++) {
		uint8_t *dst = sink;
		size_t room = sizeof sink;
		bool keep = !p->released && o->cap.len < OUTPUT_CAP;
		if (keep) {
			size_t want = OUTPUT_CAP - o->cap.len;
			if (want > 65536)
				want = 65536;
			if (buf_reserve(&o->cap, want) == 0) {
				dst = o->cap.p + o->cap.len;
				room = want;
			} else {
				keep = false;
			}
		}
		ssize_t n = read(o->fd, dst, room);
		if (n > 0) {
			if (keep)
				o->cap.len += (size_t)n;
			else if (!p->released)
				o->truncated = true; /* past the cap: keep draining, drop the bytes */
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		close_fd(&o->fd); /* EOF or a read error */
	}
}

static void in_pop(struct proc *p)
{
	struct inchunk *c = p->inq;
	p->inq = c->next;
	if (!p->inq)
		p->inq_tail = NULL;
	free(c->p);
	free(c);
}

/* Writes queued stdin; replies to each stdin_write once its bytes are in the pipe. */
static void in_pump(struct proc *p)
{
	while (p->inq) {
		struct inchunk *c = p->inq;
		struct req *r = c->r;
		if (c->close) {
			close_fd(&p->in_fd);
			p->in_closed = true;
			in_pop(p);
			if (r)
				ok_empty(r);
			continue;
		}
		if (p->in_fd < 0) {
			in_pop(p);
			if (r)
				reply_errno(r, EPIPE);
			continue;
		}
		if (c->off < c->len) {
			ssize_t n = write(p->in_fd, c->p + c->off, c->len - c->off);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					return;
				close_fd(&p->in_fd); /* EPIPE: nobody reads; fail what is queued */
				p->in_closed = true;
				continue;
			}
			c->off += (size_t)n;
			if (c->off < c->len)
				continue;
		}
		size_t len = c->len;
		in_pop(p);
		if (r) {
			struct mpw *w = ok_begin(r, 1);
			mpw_str(w, "written");
			mpw_uint(w, len);
			ok_end(r);
		}
	}
}

static bool in_queue(struct proc *p, const uint8_t *data, size_t len, struct req *r, bool close)
{
	struct inchunk *c = calloc(1, sizeof *c);
	if (!c)
		return false;
	if (len) {
		c->p = malloc(len);
		if (!c->p) {
			free(c);
			return false;
		}
		memcpy(c->p, data, len);
	}
	c->len = len;
	c->r = r;
	c->close = close;
	if (p->inq_tail)
		p->inq_tail->next = c;
	else
		p->inq = c;
	p->inq_tail = c;
	return true;
}

static void on_in(void *obj, int tag, short rev)
{
	(void)tag, (void)rev;
	in_pump(obj);
}

/* ---- lifecycle ---- */

bool proc_on_exit(pid_t pid, int wstatus)
{
	for (struct proc *p = A.procs; p; p = p->next) {
		if (p->pid == pid && !p->reaped) {
			p->reaped = true;
			p->wstatus = wstatus;
			p->reap_ms = now_ms();
			return true;
		}
	}
	return false;
}

static void proc_free(struct proc *p)
{
	for (int k = 0; k < 2; k++) {
		close_fd(&p->out[k].fd);
		buf_free(&p->out[k].cap);
		if (p->out[k].stream)
			p->out[k].stream->owner = NULL;
	}
	close_fd(&p->in_fd);
	while (p->inq) {
		struct req *r = p->inq->r;
		bool close = p->inq->close;
		in_pop(p);
		if (r && close)
			ok_empty(r);
		else if (r)
			reply_errno(r, EPIPE);
	}
	free(p);
}

void proc_tick(int64_t now, int64_t *dl)
{
	struct proc **pp = &A.procs;
	while (*pp) {
		struct proc *p = *pp;
		/* 1. Timeouts (exec timeout_ms, wait timeout_ms) kill the whole group. */
		if (!p->reaped && waiters_expired(p->waiters, now, dl) && !p->timed_out) {
			p->timed_out = true;
			kill_group(p, SIGKILL);
		}
		/* 2. Complete: reaped, and pipes at EOF or the grace period over. */
		if (p->reaped && !p->done) {
			if (p->out[0].fd >= 0 || p->out[1].fd >= 0) {
				if (now >= p->reap_ms + GRACE_MS) {
					on_out(p, 0, 0); /* take what is already in the pipes */
					on_out(p, 1, 0);
					p->done = true;
				} else {
					dl_min(dl, p->reap_ms + GRACE_MS);
				}
			} else {
				p->done = true;
			}
		}
		/* 3. Answer waiters; a waited handle is gone. */
		if (p->done && p->waiters) {
			while (p->waiters) {
				struct waiter *w = p->waiters;
				p->waiters = w->next;
				reply_result(w->r, p);
				free(w);
			}
			p->waited = true;
		}
		if (p->done && (p->waited || p->released)) {
			*pp = p->next;
			proc_free(p);
			continue;
		}
		pp = &p->next;
	}
}

void proc_pollfds(void)
{
	for (struct proc *p = A.procs; p; p = p->next) {
		for (int k = 0; k < 2; k++)
			if (p->out[k].fd >= 0)
				ps_add(p->out[k].fd, POLLIN, on_out, p, k);
		if (p->in_fd >= 0 && p->inq)
			ps_add(p->in_fd, POLLOUT, on_in, p, 0);
	}
}

/* ---- ops ---- */

static bool env_has_key(mpv env, const char *entry)
{
	const char *eq = strchr(entry, '=');
	size_t klen = eq ? (size_t)(eq - entry) : strlen(entry);
	uint32_t n = env ? mp_count(env) : 0;
	mpv p = env ? mp_items(env) : NULL;
	for (uint32_t k = 0; k < n; k++) {
		const char *s;
		size_t sl;
		if (mp_get_str(p, &s, &sl) && sl == klen && memcmp(s, entry, klen) == 0)
			return true;
		p = mp_skip(mp_skip(p));
	}
	return false;
}

static void run(struct req *r, mpv d, bool is_exec)
{
	struct launch L = { 0 };
	mpv argv_v, env = NULL, it;
	bool env_clear = false, has_tmo = false;
	const uint8_t *in;
	size_t in_len, n_env = 0, k;
	uint64_t tmo = 0;
	char *cwd = NULL;
	struct proc *p = NULL;

	/* 1. Arguments. */
	if (!arg_arr(r, d, "argv", &argv_v) || !opt_map(r, d, "env", &env) ||
	    !opt_bool(r, d, "env_clear", &env_clear) || !opt_cstr(r, d, "cwd", &cwd) ||
	    !opt_bytes(r, d, "stdin", &in, &in_len))
		return;
	if (is_exec && !opt_u64(r, d, "timeout_ms", &tmo, &has_tmo))
		return;
	uint32_t argc = mp_count(argv_v);
	if (argc == 0) {
		reply_err(r, EINVAL, "field `argv` must not be empty");
		return;
	}
	if (!(L.argv = req_alloc(r, (argc + 1) * sizeof(char *))))
		goto oom;
	it = mp_items(argv_v);
	for (k = 0; k < argc; k++, it = mp_skip(it)) {
		const char *s;
		size_t sl;
		if (!mp_get_str(it, &s, &sl) || memchr(s, 0, sl)) {
			reply_err(r, EINVAL, "field `argv` must be an array of strings");
			return;
		}
		if (!(L.argv[k] = req_strndup(r, s, sl)))
			goto oom;
	}
	L.argv[argc] = NULL;

	/* 2. Environment: the agent's (unless env_clear) with `env` laid over it. */
	size_t n_inherit = 0;
	if (!env_clear)
		while (environ[n_inherit])
			n_inherit++;
	uint32_t n_set = env ? mp_count(env) : 0;
	if (!(L.envp = req_alloc(r, (n_inherit + n_set + 1) * sizeof(char *))))
		goto oom;
	for (k = 0; k < n_inherit; k++)
		if (!env_has_key(env, environ[k]))
			L.envp[n_env++] = environ[k];
	it = env ? mp_items(env) : NULL;
	for (k = 0; k < n_set; k++) {
		const char *ks, *vs;
		size_t kl, vl;
		mpv val = mp_skip(it);
		if (!mp_get_str(it, &ks, &kl) || !mp_get_str(val, &vs, &vl) || memchr(ks, 0, kl) ||
		    memchr(vs, 0, vl)) {
			reply_err(r, EINVAL, "field `env` must map strings to strings");
			return;
		}
		char *e = req_alloc(r, kl + vl + 2);
		if (!e)
			goto oom;
		memcpy(e, ks, kl);
		e[kl] = '=';
		memcpy(e + kl + 1, vs, vl);
		e[kl + 1 + vl] = 0;
		L.envp[n_env++] = e;
		it = mp_skip(val);
	}
	L.envp[n_env] = NULL;
	L.path = getenv("PATH");
	for (k = 0; k < n_env; k++)
		if (strncmp(L.envp[k], "PATH=", 5) == 0)
			L.path = L.envp[k] + 5;
	if (!L.path)
		L.path = DEFAULT_PATH;
	L.cwd = cwd;

	/* 3. Start it. */
	if (!(p = calloc(1, sizeof *p)))
		goto oom;
	p->in_fd = p->out[0].fd = p->out[1].fd = -1;
	int e = launch(&L, p);
	if (e & LAUNCH_CWD_FAILED) {
		e &= ~LAUNCH_CWD_FAILED;
		free(p);
		reply_errf(r, e, "cannot use cwd %s: %s (cwd must be an existing directory in the guest)", L.cwd, strerror(e));
		return;
	}
	if (e) {
		free(p);
		reply_errno(r, e);
		return;
	}
	p->next = A.procs;
	A.procs = p;

	/* 4. Stdin: exec closes it after the given bytes; spawn keeps it open for stdin_write. */
	if (in_len)
		in_queue(p, in, in_len, NULL, false);
	if (is_exec)
		in_queue(p, NULL, 0, NULL, true);
	in_pump(p);

	if (is_exec) {
		int64_t deadline = has_tmo ? now_ms() + (int64_t)(tmo > INT32_MAX ? INT32_MAX : tmo)
					   : NO_DEADLINE;
		if (!add_waiter(&p->waiters, r, deadline)) {
			p->handle = 0;
			p->released = true; /* reaped and dropped in the background */
			reply_errno(r, ENOMEM);
		}
		return;
	}
	p->handle = A.next_handle++;
	struct mpw *w = ok_begin(r, 2);
	mpw_str(w, "handle");
	mpw_uint(w, p->handle);
	mpw_str(w, "pid");
	mpw_int(w, p->pid);
	ok_end(r);
	return;
oom:
	reply_errno(r, ENOMEM);
}

void op_exec(struct req *r, mpv d) { run(r, d, true); }
void op_spawn(struct req *r, mpv d) { run(r, d, false); }

void op_wait(struct req *r, mpv d)
{
	struct proc *p;
	uint64_t tmo;
	bool has;
	if (!get_proc(r, d, &p) || !opt_u64(r, d, "timeout_ms", &tmo, &has))
		return;
	int64_t deadline = has ? now_ms() + (int64_t)(tmo > INT32_MAX ? INT32_MAX : tmo) : NO_DEADLINE;
	if (!add_waiter(&p->waiters, r, deadline))
		reply_errno(r, ENOMEM);
	/* proc_tick answers, at once if the process is already complete. */
}

void op_proc_status(struct req *r, mpv d)
{
	struct proc *p;
	if (!get_proc(r, d, &p))
		return;
	struct mpw *w = ok_begin(r, 3);
	put_exitinfo(w, p->reaped, p->wstatus, p->timed_out);
	ok_end(r);
}

void op_kill(struct req *r, mpv d)
{
	struct proc *p;
	uint64_t sig;
	if (!get_proc(r, d, &p) || !arg_u64(r, d, "signal", &sig))
		return;
	if (sig >= NSIG) {
		reply_errno(r, EINVAL);
		return;
	}
	/* Once reaped the pid may belong to someone else. */
	if (p->reaped || kill(p->pid, (int)sig) < 0) {
		reply_errno(r, p->reaped ? ESRCH : errno);
		return;
	}
	ok_empty(r);
}

void op_get_pid(struct req *r, mpv d)
{
	struct proc *p;
	if (!get_proc(r, d, &p))
		return;
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "pid");
	mpw_int(w, p->pid);
	ok_end(r);
}

void op_stdin_write(struct req *r, mpv d)
{
	struct proc *p;
	const uint8_t *data;
	size_t len;
	if (!get_proc(r, d, &p) || !arg_bytes(r, d, "data", &data, &len))
		return;
	if (p->in_closed) {
		reply_errno(r, EPIPE);
		return;
	}
	if (!in_queue(p, data, len, r, false)) {
		reply_errno(r, ENOMEM);
		return;
	}
	in_pump(p);
}

void op_stdin_close(struct req *r, mpv d)
{
	struct proc *p;
	if (!get_proc(r, d, &p))
		return;
	if (p->in_closed) {
		ok_empty(r);
		return;
	}
	if (!in_queue(p, NULL, 0, r, true)) {
		reply_errno(r, ENOMEM);
		return;
	}
	in_pump(p);
}

void op_release(struct req *r, mpv d)
{
	struct proc *p;
	if (!get_proc(r, d, &p))
		return;
	if (p->waiters) {
		reply_errno(r, EBUSY);
		return;
	}
	/* A running process is forgotten, not killed: its output is drained and dropped and it is
	 * reaped in the background. */
	p->released = true;
	buf_free(&p->out[0].cap);
	buf_free(&p->out[1].cap);
	ok_empty(r);
}

void op_kill_all(struct req *r, mpv d)
{
	uint64_t sig;
	if (!arg_u64(r, d, "signal", &sig))
		return;
	if (sig >= NSIG) {
		reply_errno(r, EINVAL);
		return;
	}
	uint64_t killed = 0;
	for (struct proc *p = A.procs; p; p = p->next) {
		if (p->reaped)
			continue;
		if (kill(-p->pid, (int)sig) == 0 || kill(p->pid, (int)sig) == 0)
			killed++;
	}
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "killed");
	mpw_uint(w, killed);
	ok_end(r);
}
