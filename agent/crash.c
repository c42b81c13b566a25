/* crash.c: the fatal signals (SEGV, BUS, ILL, FPE, ABRT) of the agent.
 *
 * As PID 1 the kernel delivers a signal to the agent only when it has a handler, and a crash of
 * PID 1 would panic the kernel and lose the console: so the agent handles these signals, logs a
 * real fault and parks. But a handler also catches `kill -SEGV 1` from any guest process, which
 * used to park the agent for good. A real fault comes from the kernel (si_code > 0) or from the
 * agent itself (abort() raises it with its own pid); any other sender is a user process, and the
 * signal is ignored. A worker (forked from the agent, not PID 1) gets the default actions back:
 * it dies of a fault and of a signal sent to it, and the agent reports its exit. */
#include "agent.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static const int kFatal[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };

/* Async-signal-safe: appends the decimal `v` to `p`, returns the new end. */
static char *put_num(char *p, long v)
{
	char tmp[24];
	int n = 0;
	if (v < 0) {
		*p++ = '-';
		v = -v;
	}
	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) > 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

static void put_str(char **p, const char *s)
{
	size_t n = strlen(s);
	memcpy(*p, s, n);
	*p += n;
}

static void on_fatal(int sig, siginfo_t *si, void *uctx)
{
	(void)uctx;
	char msg[160], *p = msg;
	/* 1. Sent by a guest process (kill, sigqueue, tgkill from another pid): ignored. */
	if (si->si_code <= 0 && si->si_pid != getpid()) {
		put_str(&p, "provium-agent: ignored signal ");
		p = put_num(p, sig);
		put_str(&p, " sent by pid ");
		p = put_num(p, si->si_pid);
		put_str(&p, " (PID 1 takes no fatal signals from user processes)\n");
		(void)!write(A.log_fd, msg, (size_t)(p - msg));
		return;
	}
	/* 2. A real fault: log it and park, the console and the kernel intact. */
	put_str(&p, "provium-agent: fatal signal ");
	p = put_num(p, sig);
	put_str(&p, " (si_code ");
	p = put_num(p, si->si_code);
	put_str(&p, "); PID 1 halting here\n");
	(void)!write(A.log_fd, msg, (size_t)(p - msg));
	for (;;)
		pause();
}

void crash_init(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	if (A.is_init) {
		sa.sa_sigaction = on_fatal;
		sa.sa_flags = SA_SIGINFO;
	} else {
		sa.sa_handler = SIG_DFL; /* a worker must not keep the handler its parent (PID 1) had */
	}
	for (size_t k = 0; k < sizeof kFatal / sizeof kFatal[0]; k++)
		sigaction(kFatal[k], &sa, NULL);
}
