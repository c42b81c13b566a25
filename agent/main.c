/* main.c: start-up modes (standalone PID 1, chain, listen), early boot, finding the port. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define MODULE_INIT_COMPRESSED_FILE 4
#define RNG_SEED_PATH "/sys/firmware/qemu_fw_cfg/by_name/opt/provium/rng-seed/raw"
#define PORT_FAST_RETRY_MS 5000

/* Children get 0, 1 and 2 replaced by pipes; the agent's own must exist so that no pipe ever
 * lands on them (the kernel starts init with nothing open when /dev/console is missing). */
static void ensure_std_fds(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int n = open("/dev/null", O_RDWR);
		if (n < 0)
			n = open("/", O_RDONLY | O_DIRECTORY);
		if (n >= 0 && n != fd) {
			dup2(n, fd);
			close(n);
		}
	}
}

static ssize_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t got = 0;
	while (got < cap) {
		ssize_t n = read(fd, buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return (ssize_t)got;
}

static void trim(char *s)
{
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = 0;
}

static bool cmdline_has(const char *word)
{
	char buf[4096];
	ssize_t n = read_small("/proc/cmdline", buf, sizeof buf - 1);
	if (n <= 0)
		return false;
	buf[n] = 0;
	size_t wl = strlen(word);
	for (char *p = buf; (p = strstr(p, word)); p += wl) {
		bool start = p == buf || p[-1] == ' ';
		bool end = p[wl] == 0 || p[wl] == ' ' || p[wl] == '\n';
		if (start && end)
			return true;
	}
	return false;
}

static void mnt(const char *src, const char *dst, const char *type, unsigned long fl, const char *data,
		mode_t mode, bool quiet)
{
	mkdir(dst, mode);
	if (mount(src, dst, type, fl, data) < 0 && errno != EBUSY && !quiet)
		logmsg("mount %s on %s: %s", type, dst, strerror(errno));
}

/* Loads the modules listed in `list_path` (one path a line, relative to /lib/modules/<release>). */
void load_module_list(const char *list_path)
{
	static char list[65536];
	ssize_t n = read_small(list_path, list, sizeof list - 1);
	if (n <= 0)
		return;
	list[n] = 0;
	struct utsname u;
	uname(&u);
	char *save = NULL;
	for (char *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		while (*line == ' ' || *line == '\t')
			line++;
		trim(line);
		if (!*line || *line == '#')
			continue;
		char path[1024];
		if (*line == '/')
			snprintf(path, sizeof path, "%s", line);
		else
			snprintf(path, sizeof path, "/lib/modules/%s/%s", u.release, line);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			logmsg("module %s: %s", path, strerror(errno));
			continue;
		}
		size_t pl = strlen(path);
		bool compressed = (pl > 3 && !strcmp(path + pl - 3, ".xz")) ||
				  (pl > 4 && !strcmp(path + pl - 4, ".zst")) ||
				  (pl > 3 && !strcmp(path + pl - 3, ".gz"));
		if (syscall(SYS_finit_module, fd, "", compressed ? MODULE_INIT_COMPRESSED_FILE : 0) < 0 &&
		    errno != EEXIST)
			logmsg("module %s: %s", path, strerror(errno));
		close(fd);
	}
}

void seed_rng_from_fw_cfg(void)
{
	static char seed[4096];
	ssize_t n = read_small(RNG_SEED_PATH, seed, sizeof seed);
	if (n > 0 && seed_kernel_rng((const uint8_t *)seed, (size_t)n) < 0)
		logmsg("rng seed: %s", strerror(errno));
}

/* `lo` up, as every init does: servers on localhost must be reachable inside the guest. */
static void loopback_up(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
	if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0 ||
	    (ifr.ifr_flags |= IFF_UP, ioctl(fd, SIOCSIFFLAGS, &ifr) < 0))
		logmsg("bringing up lo: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* PID 1 with no /init (or provium.chain=0): set up the minimal system ourselves. */
static void boot_standalone(bool proc_mounted)
{
	A.mode = MODE_STANDALONE;
	mnt("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", 0755, false);
	int con = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (con >= 0) {
		dup2(con, 0);
		dup2(con, 1);
		dup2(con, 2);
		A.log_fd = con;
	}
	if (!proc_mounted)
		mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555, false);
	mnt("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555, false);
	mnt("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777, false);
	mnt("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0755, false);
	mnt("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620", 0755, true);
	mnt("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777, true);
	load_module_list("/lib/modules/provium.load");
	seed_rng_from_fw_cfg();
	loopback_up();
	power_init();
}

/* PID 1 from rdinit: chain to the image's /init unless told not to, else standalone. */
static void boot_init(char **argv)
{
	mkdir("/proc", 0555);
	bool proc_mounted = mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0;
	if (root_wanted())
		root_switch(); /* does not return: the agent (or systemd) starts again in the new root */
	bool chain = access("/init", X_OK) == 0 && !cmdline_has("provium.chain=0");
	if (!chain) {
		boot_standalone(proc_mounted);
		return;
	}
	/* /init expects the system as the kernel left it. */
	if (proc_mounted)
		umount2("/proc", MNT_DETACH);
	pid_t pid = fork();
	if (pid == 0) {
		setsid();
		A.mode = MODE_CHAIN;
		A.is_init = false;
		A.pid = getpid();
		return;
	}
	if (pid < 0)
		logmsg("fork: %s; starting /init without the agent", strerror(errno));
	argv[0] = "/init";
	execv("/init", argv);
	/* Still PID 1, and the agent child may be serving: keep reaping, never exit. */
	logmsg("exec /init: %s", strerror(errno));
	for (;;)
		if (waitpid(-1, NULL, 0) < 0 && errno == ECHILD)
			pause();
}

/* ---- the host connection ---- */

static bool find_port(char *dev, size_t devcap, char *seen, size_t seencap)
{
	seen[0] = 0;
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d) {
		snprintf(seen, seencap, "/sys/class/virtio-ports: %s", strerror(errno));
		return false;
	}
	bool found = false;
	size_t used = 0;
	struct dirent *de;
	while ((de = readdir(d)) && !found) {
		if (de->d_name[0] == '.')
			continue;
		char path[512], name[256];
		snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", de->d_name);
		ssize_t n = read_small(path, name, sizeof name - 1);
		name[n > 0 ? n : 0] = 0;
		trim(name);
		if (used < seencap)
			used += (size_t)snprintf(seen + used, seencap - used, "%s%s=%s", used ? ", " : "",
						 de->d_name, name);
		if (strcmp(name, PORT_NAME) != 0)
			continue;
		snprintf(dev, devcap, "/dev/%s", de->d_name);
		found = true;
		/* No udev: if devtmpfs is not there (chain mode, early), make the node ourselves. */
		struct stat st;
		if (stat(dev, &st) < 0) {
			char devno[32];
			unsigned maj, min;
			snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/dev", de->d_name);
			ssize_t k = read_small(path, devno, sizeof devno - 1);
			devno[k > 0 ? k : 0] = 0;
			if (sscanf(devno, "%u:%u", &maj, &min) == 2)
				mknod(dev, S_IFCHR | 0600, makedev(maj, min));
		}
	}
	closedir(d);
	if (!found && !seen[0])
		snprintf(seen, seencap, "no ports");
	return found;
}

/* The device named by --port, if any; otherwise the port is found by name. */
static const char *port_explicit;

/* One attempt: find the port and open it. The fd, or -1 with what was seen in `seen`. */
static int port_try_open(char *dev, size_t devcap, char *seen, size_t seencap)
{
	bool found;
	if (port_explicit) {
		snprintf(dev, devcap, "%s", port_explicit);
		found = true;
	} else {
		found = find_port(dev, devcap, seen, seencap);
	}
	if (!found)
		return -1;
	int fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		snprintf(seen, seencap, "open %s: %s", dev, strerror(errno));
	return fd;
}

void port_setup(int fd)
{
	/* SIGIO tells us when the host side opens or closes. */
	fcntl(fd, F_SETOWN, getpid());
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK);
}

int port_reopen(void)
{
	char dev[300], seen[512];
	int fd = port_try_open(dev, sizeof dev, seen, sizeof seen);
	if (fd >= 0) {
		port_setup(fd);
		snprintf(A.port_desc, sizeof A.port_desc, "%s", dev);
	}
	return fd;
}

static void port_open(void)
{
	int64_t start = now_ms();
	bool logged = false;
	char dev[300], seen[512];
	int fd;
	while ((fd = port_try_open(dev, sizeof dev, seen, sizeof seen)) < 0) {
		int64_t waited = now_ms() - start;
		if (waited >= PORT_FAST_RETRY_MS && !logged) {
			logmsg("no virtio port %s after %lld ms (%s); still looking every second", PORT_NAME,
			       (long long)waited, seen);
			logged = true;
		}
		usleep(waited < PORT_FAST_RETRY_MS ? 10000 : 1000000);
	}
	port_setup(fd);
	A.conn.kind = CONN_PORT;
	A.conn.fd = fd;
	A.conn.lfd = -1;
	A.conn.up = false;
	A.conn.recheck_ms = 0;
	conn_remember_fd();
	snprintf(A.port_desc, sizeof A.port_desc, "%s", dev);
}

static void listen_open(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path)
		fatal("--listen %s: path too long", path);
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		fatal("socket: %s", strerror(errno));
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 8) < 0)
		fatal("--listen %s: %s", path, strerror(errno));
	A.conn.kind = CONN_LISTEN;
	A.conn.lfd = fd;
	A.conn.fd = -1;
	snprintf(A.port_desc, sizeof A.port_desc, "%s", path);
}

static void usage(void)
{
	static const char msg[] =
		"usage: provium-agent                 (as rdinit: standalone or chain mode)\n"
		"       provium-agent --listen PATH   (serve a unix socket, for tests)\n"
		"       provium-agent [--port DEV]    (serve a virtio port, not as PID 1)\n";
	(void)!write(2, msg, sizeof msg - 1);
}

int main(int argc, char **argv)
{
	A.log_fd = 2;
	A.conn.fd = A.conn.lfd = -1;
	A.sigpipe[0] = A.sigpipe[1] = -1;
	A.next_handle = 1;
	A.next_worker = 1;
	A.pid = getpid();
	A.is_init = A.pid == 1;
	ensure_std_fds();

	const char *listen_path = NULL, *port = NULL;
	for (int k = 1; k < argc; k++) {
		if (!strcmp(argv[k], "--listen") && k + 1 < argc) {
			listen_path = argv[++k];
		} else if (!strcmp(argv[k], "--port") && k + 1 < argc) {
			port = argv[++k];
		} else if (!strcmp(argv[k], "--version")) {
			printf("provium-agent %s (protocol %d)\n", AGENT_VERSION, PROTOCOL_VERSION);
			return 0;
		} else if (!A.is_init) {
			usage();
			return 2;
		}
		/* As PID 1, other arguments come from the kernel command line and belong to /init. */
	}
	if (listen_path) {
		A.mode = MODE_LISTEN;
		listen_open(listen_path);
	} else if (A.is_init) {
		boot_init(argv);
	} else {
		A.mode = MODE_CHAIN; /* started by some other init */
	}
	/* After the chain fork: /init gets the environment the kernel gave. */
	if (!getenv("PATH"))
		setenv("PATH", DEFAULT_PATH, 1);
	signals_init();
	if (!listen_path) {
		port_explicit = port;
		port_open();
	}
	logmsg("ready (mode=%s, port=%s)", mode_name(), A.port_desc);
	serve();
}
