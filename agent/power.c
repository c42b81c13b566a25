/* power.c: the ACPI power button, standalone PID 1 only (in chain mode the image's init owns
 * power; --listen runs on the host).
 *
 * Without udev or acpid: the kernel's ACPI `button` driver reports KEY_POWER through an input
 * device named "Power Button"; with `evdev` loaded it has a /dev/input/eventN node, which the
 * loop polls like any other descriptor. A press starts the shutdown: SIGTERM to every process,
 * up to POWER_GRACE_MS for them to go (the loop keeps running and reaps them), then SIGKILL,
 * sync and reboot(RB_POWER_OFF), after which QEMU exits by itself. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <unistd.h>

#define POWER_GRACE_MS 1000
#define EV_KEY 1
#define KEY_POWER 116

/* The kernel's struct input_event on 64-bit (and 32-bit time64) ABIs; musl ships no
 * <linux/input.h>. */
struct input_event {
	unsigned long sec, usec;
	uint16_t type, code;
	int32_t value;
};

static bool read_name(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return n > 0;
}

/* After the modules are loaded: open every "Power Button" event device (at most POWER_MAX_FDS).
 * Names come from sysfs (~3 ms under TCG) rather than EVIOCGNAME on each /dev/input node:
 * opening the AT keyboard's node enables the i8042 keyboard, 35-60 ms under TCG. */
void power_init(void)
{
	DIR *d = opendir("/sys/class/input");
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) && A.npower < POWER_MAX_FDS) {
		if (strncmp(de->d_name, "event", 5) != 0)
			continue;
		char path[300], name[128];
		snprintf(path, sizeof path, "/sys/class/input/%s/device/name", de->d_name);
		if (!read_name(path, name, sizeof name) || !strstr(name, "Power Button"))
			continue;
		snprintf(path, sizeof path, "/dev/input/%s", de->d_name);
		int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd < 0) {
			logmsg("power button %s: %s", path, strerror(errno));
			continue;
		}
		A.power_fd[A.npower++] = fd;
	}
	closedir(d);
}

static void power_start(void)
{
	if (A.poweroff_ms)
		return;
	logmsg("power button, shutting down");
	A.poweroff_ms = now_ms() + POWER_GRACE_MS;
	kill(-1, SIGTERM); /* every process but PID 1 (kernel threads ignore it) */
}

static void on_power(void *obj, int tag, short rev)
{
	(void)obj, (void)rev;
	int fd = A.power_fd[tag];
	struct input_event ev[16];
	/* Bounded: a few reads per wake-up; whatever is left polls again. */
	for (int round = 0; round < 4; round++) {
		ssize_t n = read(fd, ev, sizeof ev);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0 || errno != EAGAIN)
				A.power_dead[tag] = true; /* closed in power_pollfds, not while dispatching */
			return;
		}
		for (size_t k = 0; k < (size_t)n / sizeof ev[0]; k++)
			if (ev[k].type == EV_KEY && ev[k].code == KEY_POWER && ev[k].value == 1)
				power_start();
		if ((size_t)n < sizeof ev)
			return;
	}
}

void power_pollfds(void)
{
	for (int k = 0; k < A.npower; k++) {
		if (A.power_fd[k] < 0)
			continue;
		if (A.power_dead[k]) {
			close_fd(&A.power_fd[k]);
			continue;
		}
		ps_add(A.power_fd[k], POLLIN, on_power, NULL, k);
	}
}

/* While shutting down: power off once no child is left (reap_all reaps them on SIGCHLD) or the
 * grace period is over. */
void power_tick(int64_t now, int64_t *dl)
{
	if (!A.poweroff_ms)
		return;
	siginfo_t si;
	bool none = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD;
	if (!none && now < A.poweroff_ms) {
		dl_min(dl, A.poweroff_ms);
		return;
	}
	kill(-1, SIGKILL);
	sync();
	reboot(RB_POWER_OFF);
	logmsg("power off: %s", strerror(errno));
	A.poweroff_ms = 0; /* keep serving */
}
