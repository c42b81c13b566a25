// Starts processes for provium (process-launcher.ts), so that the large Node process never forks.
//
// Why: a fork copies the parent's page tables and write-protects all its memory; a Node process
// with a broker, workers and a V8 heap pays 20-30 ms of main-thread time for each, and page faults
// on its own heap after. This process is small, so its forks cost well under a millisecond.
//
// Protocol, over stdin and stdout (pipes from Node):
//   request:  u32 little-endian length, then NUL-terminated strings:
//             id, stderr path, argc, argv[0..argc), envc, env[0..envc)
//   replies:  "S <id> <pid>\n"           started (the exec succeeded)
//             "F <id> <errno>\n"         not started: fork, open or exec failed with errno
//             "X <pid> <code> <signo>\n" a started process exited (code -1 when signalled)
// A started process has stdin and stdout on /dev/null, stderr appended to the given path, and is
// SIGKILLed when this launcher dies, which it does when Node dies (both by PR_SET_PDEATHSIG).
// End of stdin ends the launcher.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_REQUEST (1u << 20)
#define MAX_STRINGS 4096

static pid_t self;

static void reply(const char *line) {
  size_t len = strlen(line);
  while (len > 0) {
    ssize_t n = write(STDOUT_FILENO, line, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(0); // Node is gone: pdeathsig takes the children with us
    line += n;
    len -= (size_t)n;
  }
}

// Runs in the child: never returns. Reports exec failure's errno through `report`.
static void start_child(int report, const char *stderr_path, char **argv, char **envp) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != self) _exit(127); // the launcher died before the prctl took
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  int null = open("/dev/null", O_RDWR);
  int err = open(stderr_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (null < 0 || err < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0) {
    int e = errno;
    (void)!write(report, &e, sizeof e);
    _exit(127);
  }
  if (null > STDERR_FILENO) close(null);
  if (err > STDERR_FILENO) close(err);
  execvpe(argv[0], argv, envp);
  int e = errno;
  (void)!write(report, &e, sizeof e);
  _exit(127);
}

static void launch(char *payload, uint32_t len) {
  char *strings[MAX_STRINGS + 1];
  size_t count = 0;
  for (char *p = payload, *end = payload + len; p < end && count < MAX_STRINGS;) {
    char *nul = memchr(p, '\0', (size_t)(end - p));
    if (!nul) break;
    strings[count++] = p;
    p = nul + 1;
  }
  char line[128];
  // id, stderr path, argc, argv..., envc, env...
  if (count < 4) { fprintf(stderr, "process-launcher: malformed request (%zu strings)\n", count); _exit(2); }
  const char *id = strings[0];
  size_t argc = strtoul(strings[2], NULL, 10);
  if (argc == 0 || 3 + argc >= count) { fprintf(stderr, "process-launcher: malformed request %s (argc %zu)\n", id, argc); _exit(2); }
  size_t envc = strtoul(strings[3 + argc], NULL, 10);
  if (4 + argc + envc != count) { fprintf(stderr, "process-launcher: malformed request %s (envc %zu)\n", id, envc); _exit(2); }
  char **argv = &strings[3];
  char **envp = &strings[4 + argc];
  // Both arrays end in NULL: argv's end is the envc string's slot, envp's is past the last string.
  char *envc_slot = strings[3 + argc];
  strings[3 + argc] = NULL;
  strings[count] = NULL;

  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) < 0) {
    snprintf(line, sizeof line, "F %s %d\n", id, errno);
    reply(line);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) start_child(pipefd[1], strings[1], argv, envp);
  int e = pid < 0 ? errno : 0;
  close(pipefd[1]);
  if (pid > 0) {
    // The child's exec closes the pipe (CLOEXEC): nothing read means it started.
    ssize_t n;
    do n = read(pipefd[0], &e, sizeof e); while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof e) e = 0;
  }
  close(pipefd[0]);
  strings[3 + argc] = envc_slot;
  if (e != 0) {
    // A child that failed to exec has exited: its X line follows, which Node ignores.
    snprintf(line, sizeof line, "F %s %d\n", id, e);
  } else {
    snprintf(line, sizeof line, "S %s %d\n", id, (int)pid);
  }
  reply(line);
}

static void reap(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    char line[64];
    if (WIFSIGNALED(status)) snprintf(line, sizeof line, "X %d -1 %d\n", (int)pid, WTERMSIG(status));
    else snprintf(line, sizeof line, "X %d %d 0\n", (int)pid, WEXITSTATUS(status));
    reply(line);
  }
}

int main(void) {
  self = getpid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 0; // Node died before the prctl took
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) { perror("process-launcher: signalfd"); return 1; }
  fcntl(STDIN_FILENO, F_SETFD, FD_CLOEXEC);
  fcntl(STDOUT_FILENO, F_SETFD, FD_CLOEXEC);

  static char buf[MAX_REQUEST + 4];
  size_t have = 0;
  struct pollfd fds[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      perror("process-launcher: poll");
      return 1;
    }
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo info;
      while (read(sfd, &info, sizeof info) > 0) {}
      reap();
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(STDIN_FILENO, buf + have, sizeof buf - have);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return 0; // Node closed our stdin: it is done with us
      have += (size_t)n;
      while (have >= 4) {
        uint32_t len = (uint32_t)(unsigned char)buf[0] | (uint32_t)(unsigned char)buf[1] << 8 | (uint32_t)(unsigned char)buf[2] << 16 | (uint32_t)(unsigned char)buf[3] << 24;
        if (len > MAX_REQUEST) { fprintf(stderr, "process-launcher: request of %u bytes (the limit is %u)\n", len, MAX_REQUEST); return 2; }
        if (have < 4 + (size_t)len) break;
        launch(buf + 4, len);
        memmove(buf, buf + 4 + len, have - 4 - len);
        have -= 4 + len;
      }
    }
  }
}
