/* files.c: whole-file ops, directory ops, and open files whose handle is the guest fd.
 *
 * Nothing here may block the loop: opens use O_NONBLOCK (a FIFO would otherwise wait for its
 * other end), and read/write on a handle that is not ready are parked as an fdop until poll
 * says it is. Permissions given by the host are exact (umask is cleared around the call). */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { OM_READ = 1, OM_WRITE = 2, OM_CREATE = 4, OM_TRUNCATE = 8, OM_APPEND = 16, OM_EXCLUSIVE = 32 };

/* Descriptors the host must not touch through the file ops: stdio and the agent's own. */
static bool internal_fd(int fd)
{
	if (fd <= 2 || fd == A.sigpipe[0] || fd == A.sigpipe[1] || fd == A.log_fd)
		return true;
	if (fd == A.conn.fd || fd == A.conn.lfd)
		return true;
	for (int k = 0; k < A.npower; k++)
		if (fd == A.power_fd[k])
			return true;
	for (struct proc *p = A.procs; p; p = p->next)
		if (fd == p->in_fd || fd == p->out[0].fd || fd == p->out[1].fd)
			return true;
	for (struct stream *s = A.streams; s; s = s->next)
		if (fd == s->fd)
			return true;
	for (struct worker *w = A.workers; w; w = w->next)
		if (fd == w->sock)
			return true;
	return false;
}

bool arg_fd(struct req *r, mpv d, const char *k, int *fd)
{
	uint64_t h;
	if (!arg_u64(r, d, k, &h))
		return false;
	if (h > INT_MAX || internal_fd((int)h)) {
		reply_errno(r, EBADF);
		return false;
	}
	*fd = (int)h;
	return true;
}

static const char *entry_type(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFREG: return "file";
	case S_IFDIR: return "directory";
	case S_IFLNK: return "symlink";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "socket";
	case S_IFBLK: return "block_device";
	case S_IFCHR: return "char_device";
	default: return "other";
	}
}

static int open_exact(const char *path, int flags, mode_t perm)
{
	mode_t old = umask(0);
	int fd = open(path, flags, perm);
	int e = errno;
	umask(old);
	errno = e;
	return fd;
}

/* ---- whole files ---- */

void op_read_file(struct req *r, mpv d)
{
	char *path;
	struct buf b = { 0 };
	struct stat st;
	int e = 0;
	if (!arg_cstr(r, d, "path", &path))
		return;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		reply_errno(r, errno);
		return;
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		e = EISDIR;
		goto fail;
	}
	if (st.st_size > 0 && st.st_size <= READ_FILE_MAX &&
	    buf_reserve(&b, (size_t)st.st_size + 1) < 0) {
		e = ENOMEM;
		goto fail;
	}
	/* Until EOF, or until a FIFO or device has nothing more right now. */
	for (;;) {
		if (b.len > READ_FILE_MAX) {
			e = EFBIG;
			goto fail;
		}
		if (b.cap - b.len < 4096 && buf_reserve(&b, 65536) < 0) {
			e = ENOMEM;
			goto fail;
		}
		ssize_t n = read(fd, b.p + b.len, b.cap - b.len);
		if (n > 0) {
			b.len += (size_t)n;
			continue;
		}
		if (n == 0 || errno == EAGAIN)
			break;
		if (errno != EINTR) {
			e = errno;
			goto fail;
		}
	}
	close(fd);
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "data");
	mpw_bin(w, b.p, b.len);
	buf_free(&b);
	ok_end(r);
	return;
fail:
	close(fd);
	buf_free(&b);
	reply_errno(r, e);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

void op_write_file(struct req *r, mpv d)
{
	char *path;
	const uint8_t *data;
	size_t len;
	bool append = false, has_perm;
	uint64_t perm = 0644;
	if (!arg_cstr(r, d, "path", &path) || !arg_bytes(r, d, "data", &data, &len) ||
	    !opt_bool(r, d, "append", &append) || !opt_u64(r, d, "perm", &perm, &has_perm))
		return;
	int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (append ? O_APPEND : O_TRUNC);
	int fd = open_exact(path, flags, (mode_t)(perm & 07777));
	if (fd < 0) {
		reply_errno(r, errno);
		return;
	}
	int e = write_all(fd, data, len) < 0 ? errno : 0;
	if (close(fd) < 0 && !e && errno != EINTR)
		e = errno;
	if (e)
		reply_errno(r, e);
	else
		ok_empty(r);
}

/* ---- metadata and directories ---- */

void op_stat(struct req *r, mpv d)
{
	char *path;
	bool follow = true;
	struct stat st;
	if (!arg_cstr(r, d, "path", &path) || !opt_bool(r, d, "follow", &follow))
		return;
	if ((follow ? stat(path, &st) : lstat(path, &st)) < 0) {
		reply_errno(r, errno);
		return;
	}
	struct mpw *w = ok_begin(r, 7);
	mpw_str(w, "size");
	mpw_uint(w, (uint64_t)st.st_size);
	mpw_str(w, "mtime_ns");
	mpw_int(w, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
	mpw_str(w, "perm");
	mpw_uint(w, st.st_mode & 07777);
	mpw_str(w, "entry_type");
	mpw_str(w, entry_type(st.st_mode));
	mpw_str(w, "uid");
	mpw_uint(w, st.st_uid);
	mpw_str(w, "gid");
	mpw_uint(w, st.st_gid);
	mpw_str(w, "nlink");
	mpw_uint(w, st.st_nlink);
	ok_end(r);
}

struct dent {
	char *name;
	const char *type;
};

static int dent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct dent *)a)->name, ((const struct dent *)b)->name);
}

void op_listdir(struct req *r, mpv d)
{
	char *path;
	struct dent *ents = NULL;
	size_t n = 0, cap = 0;
	int e = 0;
	if (!arg_cstr(r, d, "path", &path))
		return;
	DIR *dir = opendir(path);
	if (!dir) {
		reply_errno(r, errno);
		return;
	}
	struct dirent *de;
	errno = 0;
	while ((de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			struct dent *ne = realloc(ents, cap * sizeof *ne);
			if (!ne) {
				e = ENOMEM;
				goto fail;
			}
			ents = ne;
		}
		const char *type = "other";
		switch (de->d_type) {
		case DT_REG: type = "file"; break;
		case DT_DIR: type = "directory"; break;
		case DT_LNK: type = "symlink"; break;
		case DT_FIFO: type = "fifo"; break;
		case DT_SOCK: type = "socket"; break;
		case DT_BLK: type = "block_device"; break;
		case DT_CHR: type = "char_device"; break;
		default: {
			struct stat st;
			if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
				type = entry_type(st.st_mode);
		}
		}
		if (!(ents[n].name = strdup(de->d_name))) {
			e = ENOMEM;
			goto fail;
		}
		ents[n++].type = type;
		errno = 0;
	}
	if (errno) {
		e = errno;
		goto fail;
	}
	qsort(ents, n, sizeof *ents, dent_cmp);
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "entries");
	mpw_arr(w, (uint32_t)n);
	for (size_t k = 0; k < n; k++) {
		mpw_map(w, 2);
		mpw_str(w, "name");
		mpw_str(w, ents[k].name);
		mpw_str(w, "entry_type");
		mpw_str(w, ents[k].type);
	}
	ok_end(r);
	goto out;
fail:
	reply_errno(r, e);
out:
	for (size_t k = 0; k < n; k++)
		free(ents[k].name);
	free(ents);
	closedir(dir);
}

static int mkdir_exact(const char *path, mode_t perm)
{
	mode_t old = umask(0);
	int rc = mkdir(path, perm);
	int e = errno;
	umask(old);
	errno = e;
	return rc;
}

/* An existing directory is fine at every level; intermediate directories get 0755. */
static int mkdir_parents(char *path, mode_t perm)
{
	struct stat st;
	for (char *p = path + 1;; p++) {
		bool last = *p == 0;
		if (*p != '/' && !last)
			continue;
		char c = *p;
		*p = 0;
		int rc = mkdir_exact(path, last ? perm : 0755);
		int e = errno;
		if (rc < 0 && e == EEXIST && stat(path, &st) == 0 && !S_ISDIR(st.st_mode))
			e = last ? EEXIST : ENOTDIR;
		else if (rc < 0 && e == EEXIST)
			rc = 0;
		*p = c;
		if (rc < 0) {
			errno = e;
			return -1;
		}
		if (last)
			return 0;
		while (p[1] == '/')
			p++;
		if (p[1] == 0)
			return 0; /* trailing slash */
	}
}

void op_mkdir(struct req *r, mpv d)
{
	char *path;
	bool parents = false;
	uint64_t perm = 0755;
	if (!arg_cstr(r, d, "path", &path) || !opt_bool(r, d, "parents", &parents) ||
	    !opt_u64(r, d, "perm", &perm, NULL))
		return;
	if (!*path) {
		reply_errno(r, ENOENT);
		return;
	}
	int rc = parents ? mkdir_parents(path, (mode_t)(perm & 07777)) : mkdir_exact(path, (mode_t)(perm & 07777));
	if (rc < 0)
		reply_errno(r, errno);
	else
		ok_empty(r);
}

void op_unlink(struct req *r, mpv d)
{
	char *path;
	if (!arg_cstr(r, d, "path", &path))
		return;
	if (unlink(path) < 0) {
		if (errno != EISDIR && errno != EPERM) {
			reply_errno(r, errno);
			return;
		}
		if (rmdir(path) < 0) {
			reply_errno(r, errno == ENOTDIR ? EPERM : errno);
			return;
		}
	}
	ok_empty(r);
}

void op_rename(struct req *r, mpv d)
{
	char *from, *to;
	if (!arg_cstr(r, d, "from", &from) || !arg_cstr(r, d, "to", &to))
		return;
	if (rename(from, to) < 0)
		reply_errno(r, errno);
	else
		ok_empty(r);
}

/* ---- open files ---- */

void op_open_file(struct req *r, mpv d)
{
	char *path;
	uint64_t f, perm = 0644;
	if (!arg_cstr(r, d, "path", &path) || !arg_u64(r, d, "flags", &f) || !opt_u64(r, d, "perm", &perm, NULL))
		return;
	if (f & ~(uint64_t)63) {
		reply_err(r, EINVAL, "field `flags` has unknown bits");
		return;
	}
	bool rd = f & OM_READ, wr = (f & OM_WRITE) || (f & OM_APPEND);
	if (!rd && !wr) {
		reply_err(r, EINVAL, "field `flags` must include read, write or append");
		return;
	}
	int flags = (rd && wr ? O_RDWR : wr ? O_WRONLY : O_RDONLY) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	if (f & OM_CREATE)
		flags |= O_CREAT;
	if (f & OM_TRUNCATE)
		flags |= O_TRUNC;
	if (f & OM_APPEND)
		flags |= O_APPEND;
	if (f & OM_EXCLUSIVE)
		flags |= O_CREAT | O_EXCL;
	int fd = open_exact(path, flags, (mode_t)(perm & 07777));
	if (fd < 0) {
		reply_errno(r, errno);
		return;
	}
	set_nonblock(fd, false); /* opened non-blocking only so that the open itself cannot hang */
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "handle");
	mpw_uint(w, (uint64_t)fd);
	ok_end(r);
}

static void fdop_reply_read(struct req *r, const uint8_t *p, size_t n)
{
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "data");
	mpw_bin(w, p, n);
	ok_end(r);
}

static void fdop_reply_written(struct req *r, size_t n)
{
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "written");
	mpw_uint(w, n);
	ok_end(r);
}

/* Tries the operation without blocking. Returns true when the request was answered. */
static bool fdop_try(struct fdop *op)
{
	if (!op->write) {
		uint8_t *p = malloc(op->len ? op->len : 1);
		if (!p) {
			reply_errno(op->r, ENOMEM);
			return true;
		}
		ssize_t n;
		do
			n = nb_read(op->fd, p, op->len);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno == EAGAIN) {
			free(p);
			return false;
		}
		if (n < 0)
			reply_errno(op->r, errno);
		else
			fdop_reply_read(op->r, p, (size_t)n);
		free(p);
		return true;
	}
	while (op->off < op->len) {
		ssize_t n = nb_write(op->fd, op->data + op->off, op->len - op->off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return false;
		if (n < 0) {
			if (op->off)
				break; /* report what got through */
			reply_errno(op->r, errno);
			return true;
		}
		op->off += (size_t)n;
	}
	fdop_reply_written(op->r, op->off);
	return true;
}

static void start_fdop(struct req *r, int fd, bool write, const uint8_t *data, size_t len)
{
	struct fdop op = { .r = r, .fd = fd, .write = write, .data = (uint8_t *)data, .len = len };
	if (fdop_try(&op))
		return;
	/* Not ready: park it until poll says so. A write keeps a copy of its data and the count of
	 * bytes already written (`written` reports them all). */
	struct fdop *p = calloc(1, sizeof *p);
	uint8_t *copy = write ? malloc(len ? len : 1) : NULL;
	if (!p || (write && !copy)) {
		free(p);
		free(copy);
		reply_errno(r, ENOMEM);
		return;
	}
	*p = op;
	p->data = copy;
	if (write)
		memcpy(copy, data, len);
	p->next = A.fdops;
	A.fdops = p;
}

static void on_fdop(void *obj, int tag, short rev)
{
	(void)tag;
	struct fdop *op = obj;
	if (op->done)
		return;
	if (rev & POLLNVAL) {
		reply_errno(op->r, EBADF);
		op->done = true;
		return;
	}
	if (fdop_try(op))
		op->done = true;
}

void fdop_tick(int64_t now, int64_t *dl)
{
	(void)now, (void)dl;
	struct fdop **pp = &A.fdops;
	while (*pp) {
		struct fdop *op = *pp;
		if (op->done) {
			*pp = op->next;
			free(op->data);
			free(op);
			continue;
		}
		pp = &op->next;
	}
}

void fdop_pollfds(void)
{
	for (struct fdop *op = A.fdops; op; op = op->next)
		if (!op->done)
			ps_add(op->fd, op->write ? POLLOUT : POLLIN, on_fdop, op, 0);
}

void op_read(struct req *r, mpv d)
{
	int fd;
	uint64_t len;
	if (!arg_fd(r, d, "handle", &fd) || !arg_u64(r, d, "len", &len))
		return;
	start_fdop(r, fd, false, NULL, len > READ_MAX ? READ_MAX : (size_t)len);
}

void op_write(struct req *r, mpv d)
{
	int fd;
	const uint8_t *data;
	size_t len;
	if (!arg_fd(r, d, "handle", &fd) || !arg_bytes(r, d, "data", &data, &len))
		return;
	start_fdop(r, fd, true, data, len);
}

void op_seek(struct req *r, mpv d)
{
	int fd, whence;
	int64_t off;
	char *wh;
	if (!arg_fd(r, d, "handle", &fd) || !arg_i64(r, d, "offset", &off) || !arg_cstr(r, d, "whence", &wh))
		return;
	if (!strcmp(wh, "set"))
		whence = SEEK_SET;
	else if (!strcmp(wh, "cur"))
		whence = SEEK_CUR;
	else if (!strcmp(wh, "end"))
		whence = SEEK_END;
	else {
		reply_err(r, EINVAL, "field `whence` must be \"set\", \"cur\" or \"end\"");
		return;
	}
	off_t pos = lseek(fd, (off_t)off, whence);
	if (pos < 0) {
		reply_errno(r, errno);
		return;
	}
	struct mpw *w = ok_begin(r, 1);
	mpw_str(w, "offset");
	mpw_uint(w, (uint64_t)pos);
	ok_end(r);
}

void op_close(struct req *r, mpv d)
{
	int fd;
	if (!arg_fd(r, d, "handle", &fd))
		return;
	if (close(fd) < 0 && errno != EINTR)
		reply_errno(r, errno);
	else
		ok_empty(r);
}
