/* util.c: buffers, time, logging, descriptor helpers. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct agent A;

int buf_reserve(struct buf *b, size_t extra)
{
	if (b->cap - b->len >= extra)
		return 0;
	size_t need = b->len + extra;
	if (need < b->len) {
		errno = ENOMEM;
		return -1;
	}
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	uint8_t *p = realloc(b->p, cap);
	if (!p)
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (buf_reserve(b, n) < 0)
		return -1;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void vlog(const char *fmt, va_list ap)
{
	char line[768];
	int n = snprintf(line, sizeof line, "provium-agent: ");
	int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	(void)!write(A.log_fd, line, (size_t)n);
}

void logmsg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

/* As PID 1 the agent must not exit (the kernel would panic): it logs and parks forever. */
void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
	if (A.is_init) {
		logmsg("PID 1 cannot exit; halting here");
		for (;;)
			pause();
	}
	_exit(1);
}

int set_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	int nfl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return nfl == fl ? 0 : fcntl(fd, F_SETFL, nfl);
}

ssize_t nb_read(int fd, void *p, size_t n)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	if (!(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	ssize_t r = read(fd, p, n);
	int e = errno;
	if (!(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl);
	errno = e;
	return r;
}

ssize_t nb_write(int fd, const void *p, size_t n)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	if (!(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	ssize_t r = write(fd, p, n);
	int e = errno;
	if (!(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl);
	errno = e;
	return r;
}

void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

static void close_range_or_loop(unsigned lo, unsigned hi)
{
	if (lo > hi)
		return;
	if (syscall(SYS_close_range, lo, hi, 0) == 0)
		return;
	long max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (long fd = lo; fd <= (long)hi && fd < max; fd++)
		close((int)fd);
}

void close_all_except(int keep_a, int keep_b)
{
	int a = keep_a < keep_b ? keep_a : keep_b;
	int b = keep_a < keep_b ? keep_b : keep_a;
	unsigned lo = 3;
	if (a >= 3) {
		close_range_or_loop(lo, (unsigned)a - 1);
		lo = (unsigned)a + 1;
	}
	if (b >= 3 && b != a) {
		close_range_or_loop(lo, (unsigned)b - 1);
		lo = (unsigned)b + 1;
	}
	close_range_or_loop(lo, ~0u);
}
