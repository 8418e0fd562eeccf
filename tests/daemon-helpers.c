/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon-helpers.h"

/* The suite of every test in every daemon-*-test program. */
TestSuite(daemon, .timeout = 60);

void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
}

char *read_file(const char *path)
{
	static char buf[65536];
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	buf[n] = '\0';
	if (f)
		fclose(f);
	return buf;
}

void make_dir(struct daemon *d)
{
	strcpy(d->dir, "/tmp/framebus-test-XXXXXX");
	cr_assert_not_null(mkdtemp(d->dir));
	snprintf(d->socket, sizeof(d->socket), "%s/framebus.sock", d->dir);
	snprintf(d->config, sizeof(d->config), "%s/framebusd.conf", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/framebusd.log", d->dir);
}

void exec_daemon(const char *const *args)
{
	const char *wrapper = getenv("FRAMEBUS_TEST_DAEMON_WRAPPER");
	bool wrapped = wrapper && *wrapper;
	const char *argv[16];
	int n = 0;

	if (wrapped) {
		argv[n++] = "sh";
		argv[n++] = "-c";
		argv[n++] = "exec $FRAMEBUS_TEST_DAEMON_WRAPPER \"$0\" \"$@\"";
		argv[n++] = FRAMEBUSD_PATH; /* $0 */
	} else {
		argv[n++] = "framebusd";
	}
	while (*args && n < 15)
		argv[n++] = *args++;
	argv[n] = NULL;
	execv(wrapped ? "/bin/sh" : FRAMEBUSD_PATH, (char **)argv);
}

pid_t spawn_daemon(struct daemon *d, const char *notify_socket)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int log = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
		dup2(log, STDOUT_FILENO);
		dup2(log, STDERR_FILENO);
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no daemon behind */
		if (notify_socket)
			setenv("NOTIFY_SOCKET", notify_socket, 1);
		else
			unsetenv("NOTIFY_SOCKET");
		if (notify_socket)
			setenv("WATCHDOG_USEC", "200000", 1);
		exec_daemon((const char *[]){"--config", d->config, "--socket", d->socket,
					     "--verbose", NULL});
		_exit(127);
	}
	return pid;
}

void start(struct daemon *d, const char *config)
{
	/* Under a wrapper (valgrind) the daemon starts far more slowly. */
	int seconds = getenv("FRAMEBUS_TEST_DAEMON_WRAPPER") ? 60 : 5;

	make_dir(d);
	write_file(d->config, config);
	d->pid = spawn_daemon(d, NULL);
	for (int i = 0; i < seconds * 100; i++) {
		fb_client *c;
		if (fb_client_connect(d->socket, "probe", &c) == 0) {
			fb_client_free(c);
			return;
		}
		int status;
		cr_assert_eq(waitpid(d->pid, &status, WNOHANG), 0, "framebusd exited:\n%s",
			     read_file(d->log));
		th_sleep_us(10000);
	}
	cr_assert_fail("framebusd did not listen within %d s:\n%s", seconds, read_file(d->log));
}

int run(const char *cmd)
{
	int r = system(cmd);
	return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

void remove_dir(const char *dir)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(run(cmd), 0, "cannot remove %s", dir);
}

void stop(struct daemon *d)
{
	kill(d->pid, SIGTERM);
	cr_assert_eq(th_wait(d->pid), 0, "framebusd did not stop cleanly:\n%s", read_file(d->log));
	cr_assert_eq(access(d->socket, F_OK), -1, "the socket was left behind");
	remove_dir(d->dir);
}

fb_client *client(struct daemon *d)
{
	fb_client *c;
	int r = fb_client_connect(d->socket, "test", &c);
	cr_assert_eq(r, 0, "connect: %s", fb_strerror(r));
	return c;
}

struct fb_stream_info wait_state(fb_client *c, const char *stream, uint32_t state, double seconds)
{
	struct fb_stream_info info = {0};
	uint64_t until = fb_now_ns() + (uint64_t)(seconds * 1e9);
	while (fb_now_ns() < until) {
		int r = fb_client_get_stream(c, stream, &info);
		cr_assert(r == 0 || r == -ENOENT, "%s: %s", stream, fb_strerror(r));
		if (r == 0 && info.state == state)
			return info;
		th_sleep_us(20000);
	}
	cr_assert_fail("stream %s stayed %s (%s), never %s", stream,
		       fb_stream_state_name(info.state), info.detail, fb_stream_state_name(state));
	return info;
}

int daemon_fd_count(const struct daemon *d)
{
	char path[64];
	int n = 0;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->pid);
	DIR *dir = opendir(path);
	if (!dir)
		return -1;
	while (readdir(dir))
		n++;
	closedir(dir);
	return n;
}

void wait_fd_count(const struct daemon *d, int n, double seconds, const char *what)
{
	uint64_t until = fb_now_ns() + (uint64_t)(seconds * 1e9);
	int now;
	while ((now = daemon_fd_count(d)) != n && fb_now_ns() < until)
		th_sleep_us(20000);
	cr_assert_eq(now, n, "%s: %d descriptors open, %d expected", what, now, n);
}

void wait_log(const struct daemon *d, const char *text, double seconds)
{
	uint64_t until = fb_now_ns() + (uint64_t)(seconds * 1e9);
	while (!strstr(read_file(d->log), text) && fb_now_ns() < until)
		th_sleep_us(20000);
	cr_assert(strstr(read_file(d->log), text), "the log never said '%s':\n%s", text,
		  read_file(d->log));
}

const char *const lavfi_config = "[stream bars]\n"
				 "url = testsrc2=size=320x240:rate=50\n"
				 "input_format = lavfi\n"
				 "width = 320\n"
				 "height = 240\n"
				 "format = bgr24\n"
				 "slots = 6\n";

int free_port(void)
{
	return 20000 + (int)(getpid() % 20000);
}

int raw_connect(const struct daemon *d)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	strcpy(addr.sun_path, d->socket);
	cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	return fd;
}

void raw_hello(int fd, const char *name, uint32_t n_fds_claimed, const int *fds)
{
	struct {
		uint32_t opcode, size, seq, n_fds;
		uint32_t version, client_id;
		char name[64];
	} hello = {1, sizeof(hello), 1, n_fds_claimed, 2 /* protocol version */, 0, ""};
	snprintf(hello.name, sizeof(hello.name), "%s", name);
	cr_assert_eq(th_sendmsg_fds(fd, &hello, sizeof(hello), fds, n_fds_claimed),
		     (ssize_t)sizeof(hello));
}

int as_user(const struct daemon *d, uid_t uid, gid_t gid, const gid_t *groups, int n_groups,
	    int (*fn)(const struct daemon *d, void *arg, char *error, size_t size), void *arg,
	    char *ret_error)
{
	struct {
		int r;
		char error[AS_USER_ERROR_MAX];
	} out = {0};
	int pipefd[2];
	cr_assert_eq(pipe(pipefd), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (setgroups((size_t)n_groups, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
			_exit(2);
		out.r = fn(d, arg, out.error, sizeof(out.error));
		(void)!write(pipefd[1], &out, sizeof(out));
		_exit(0);
	}
	close(pipefd[1]);
	cr_assert_eq(read(pipefd[0], &out, sizeof(out)), (ssize_t)sizeof(out),
		     "the child (uid %u) could not drop privileges or died", (unsigned)uid);
	th_wait(pid);
	close(pipefd[0]);
	if (ret_error)
		memcpy(ret_error, out.error, sizeof(out.error));
	return out.r;
}
