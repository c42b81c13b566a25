/* root.c: `provium.root=<serial>` on the kernel command line (Debian profiles). The root is a
 * read-only image (squashfs or ext4) on the virtio disk with that serial, under a tmpfs overlay:
 * writes land in RAM and the image is never modified. From the initramfs, PID 1 mounts it,
 * copies itself in, frees the initramfs and becomes the agent inside it, or systemd with
 * `provium.init=systemd` (the agent then runs as a unit, after multi-user.target). */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

#define NEWROOT "/newroot"
#define LOWER "/.provium-ro"
#define UPPER "/.provium-rw"
#define AGENT_IN_ROOT "/sbin/provium-agent"
#define UNIT_DIR NEWROOT "/etc/systemd/system"
#define ROOT_WAIT_MS 10000
/* Set across the exec into the new root, so the agent there does not switch again. */
#define IN_ROOT_ENV "PROVIUM_IN_ROOT"

static const char unit_text[] =
	"# Written at boot by provium-agent (provium.init=systemd).\n"
	"[Unit]\n"
	"Description=Provium guest agent\n"
	"After=multi-user.target\n"
	"[Service]\n"
	"ExecStart=" AGENT_IN_ROOT "\n"
	"Restart=always\n"
	"RestartSec=100ms\n"
	/* Its death on the console, where the host reads why the link went quiet (vm-fate.ts):
	 * systemd gives the signal's name (SEGV) or the exit code. A stop by systemd (shutdown,
	 * SIGTERM) is a `success` and says nothing. `$$` is a literal `$` in a unit file. */
	"ExecStopPost=/bin/sh -c '[ \"$$SERVICE_RESULT\" = success ] || case \"$$EXIT_CODE\" in "
	"killed|dumped) echo \"provium-agent: killed by signal $$EXIT_STATUS\" >/dev/console ;; "
	"*) echo \"provium-agent: exited with code $$EXIT_STATUS\" >/dev/console ;; esac'\n"
	"KillMode=process\n"
	"[Install]\n"
	"WantedBy=multi-user.target\n";

static ssize_t read_text(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return -1;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		n--;
	buf[n] = 0;
	return n;
}

static int write_full(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* The value of `key=` on the kernel command line, or false. */
static bool cmdline_value(const char *key, char *out, size_t cap)
{
	char buf[4096];
	if (read_text("/proc/cmdline", buf, sizeof buf) <= 0)
		return false;
	size_t kl = strlen(key);
	bool found = false;
	for (char *save = NULL, *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
		if (!strncmp(tok, key, kl) && tok[kl] == '=') {
			snprintf(out, cap, "%s", tok + kl + 1);
			found = true; /* the last one wins, as for the kernel's own parameters */
		}
	}
	return found;
}

bool root_wanted(void)
{
	if (getenv(IN_ROOT_ENV)) {
		unsetenv(IN_ROOT_ENV);
		return false;
	}
	char serial[128];
	return cmdline_value("provium.root", serial, sizeof serial);
}

/* Nothing to serve on: say why on the console, where the host's boot error shows it, and stop. */
static void __attribute__((noreturn)) root_fail(const char *what, const char *detail)
{
	logmsg("root: %s: %s — the guest cannot start its root filesystem", what, detail);
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

/* /dev/<name> of the block device whose virtio serial is `serial`; waits for the driver's probe. */
static void find_disk(const char *serial, char *dev, size_t cap)
{
	for (int waited = 0; waited <= ROOT_WAIT_MS; waited += 20) {
		DIR *d = opendir("/sys/block");
		struct dirent *de;
		while (d && (de = readdir(d))) {
			if (de->d_name[0] == '.')
				continue;
			char path[300], got[128];
			snprintf(path, sizeof path, "/sys/block/%s/serial", de->d_name);
			if (read_text(path, got, sizeof got) <= 0)
				continue;
			if (!strcmp(got, serial)) {
				snprintf(dev, cap, "/dev/%s", de->d_name);
				closedir(d);
				return;
			}
		}
		if (d)
			closedir(d);
		usleep(20000);
	}
	root_fail("finding the root disk", "no virtio disk with serial provium-root after 10 s");
}

static void copy_file(const char *from, const char *to, mode_t mode)
{
	int in = open(from, O_RDONLY | O_CLOEXEC);
	int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (in < 0 || out < 0)
		root_fail(to, strerror(errno));
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (write_full(out, buf, (size_t)n) < 0)
			root_fail(to, strerror(errno));
	if (n < 0)
		root_fail(from, strerror(errno));
	fchmod(out, mode);
	close(in);
	close(out);
}

static void write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_full(fd, text, strlen(text)) < 0)
		root_fail(path, strerror(errno));
	close(fd);
}

/* The agent as a unit: enabled by a link, as `systemctl enable` would make. */
static void install_unit(void)
{
	mkdir(UNIT_DIR, 0755);
	mkdir(UNIT_DIR "/multi-user.target.wants", 0755);
	write_text(UNIT_DIR "/provium-agent.service", unit_text);
	unlink(UNIT_DIR "/multi-user.target.wants/provium-agent.service");
	if (symlink("../provium-agent.service", UNIT_DIR "/multi-user.target.wants/provium-agent.service") < 0)
		root_fail("enabling provium-agent.service", strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	if (ftw->level > 0)
		remove(path); /* mount points (busy) and the new root's own tree stay */
	return 0;
}

static void move_mount(const char *from, const char *to)
{
	mkdir(to, 0755);
	if (mount(from, to, NULL, MS_MOVE, NULL) < 0)
		root_fail(to, strerror(errno));
}

void root_switch(void)
{
	char serial[128], fstype[32] = "squashfs", init[16] = "agent", dev[300];
	cmdline_value("provium.root", serial, sizeof serial);
	cmdline_value("provium.rootfstype", fstype, sizeof fstype);
	cmdline_value("provium.init", init, sizeof init);
	bool systemd = !strcmp(init, "systemd");

	/* 1. Devices and the modules the disk, squashfs and overlayfs need. */
	mkdir("/dev", 0755);
	mkdir("/sys", 0555);
	if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 && errno != EBUSY)
		root_fail("mounting devtmpfs", strerror(errno));
	if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 && errno != EBUSY)
		root_fail("mounting sysfs", strerror(errno));
	int con = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (con >= 0)
		A.log_fd = con;
	load_module_list("/lib/modules/provium.load");
	load_module_list("/lib/modules/provium.root.load");
	if (systemd)
		seed_rng_from_fw_cfg(); /* the agent, a unit there, is not PID 1 and cannot */

	/* 2. The image read-only, a tmpfs for the writes, the overlay of both. */
	find_disk(serial, dev, sizeof dev);
	mkdir(LOWER, 0755);
	mkdir(UPPER, 0755);
	mkdir(NEWROOT, 0755);
	if (mount(dev, LOWER, fstype, MS_RDONLY, NULL) < 0) {
		char what[400];
		snprintf(what, sizeof what, "mounting %s (%s) read-only", dev, fstype);
		root_fail(what, strerror(errno));
	}
	if (mount("tmpfs", UPPER, "tmpfs", 0, "mode=0755") < 0)
		root_fail("mounting the tmpfs for writes", strerror(errno));
	mkdir(UPPER "/upper", 0755);
	mkdir(UPPER "/work", 0755);
	if (mount("overlay", NEWROOT, "overlay", 0,
		  "lowerdir=" LOWER ",upperdir=" UPPER "/upper,workdir=" UPPER "/work") < 0)
		root_fail("mounting the overlay root", strerror(errno));

	/* 3. The agent goes in with the writes (the image does not depend on the agent build). */
	copy_file("/proc/self/exe", NEWROOT AGENT_IN_ROOT, 0755);
	if (systemd)
		install_unit();

	/* 4. Keep /dev and /sys; free the initramfs; make the overlay the root. */
	move_mount("/dev", NEWROOT "/dev");
	move_mount("/sys", NEWROOT "/sys");
	umount2("/proc", MNT_DETACH); /* the next init mounts its own: a second proc would stack */
	nftw("/", remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	if (chdir(NEWROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
		root_fail("switching to the new root", strerror(errno));

	if (systemd) {
		char *argv[] = { "/lib/systemd/systemd", NULL };
		execv(argv[0], argv);
		root_fail("starting /lib/systemd/systemd (is the systemd package in the profile?)", strerror(errno));
	}
	setenv(IN_ROOT_ENV, "1", 1);
	char *argv[] = { AGENT_IN_ROOT, NULL };
	execv(argv[0], argv);
	root_fail("starting the agent in the new root", strerror(errno));
}
