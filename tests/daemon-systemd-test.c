/* SPDX-License-Identifier: MIT */
/* framebusd under systemd: sd_notify (READY, STATUS, WATCHDOG, RELOADING,
 * STOPPING), socket activation, and structured logging to the journal. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon-helpers.h"

Test(daemon, systemd_notifications)
{
	struct daemon d;
	char notify_path[128];
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	make_dir(&d);
	write_file(d.config, lavfi_config);
	snprintf(notify_path, sizeof(notify_path), "%s/notify", d.dir);
	int ns = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	strcpy(addr.sun_path, notify_path);
	cr_assert_eq(bind(ns, (struct sockaddr *)&addr, sizeof(addr)), 0);
	d.pid = spawn_daemon(&d, notify_path);

	/* Collect datagrams for a while, then signal, then collect again. */
	char all[65536] = "";
	size_t len = 0;
	bool reloaded = false;
	uint64_t until = fb_now_ns() + 3000000000u;
	while (fb_now_ns() < until) {
		char buf[1024];
		struct timeval tv = {.tv_usec = 100000};
		setsockopt(ns, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		ssize_t n = recv(ns, buf, sizeof(buf) - 1, 0);
		if (n > 0 && len + (size_t)n + 2 < sizeof(all)) {
			memcpy(all + len, buf, (size_t)n);
			len += (size_t)n;
			all[len++] = '\n';
			all[len] = '\0';
		}
		if (!reloaded && strstr(all, "READY=1") && fb_now_ns() > until - 1500000000u) {
			kill(d.pid, SIGHUP);
			reloaded = true;
		}
	}
	kill(d.pid, SIGTERM);
	for (int i = 0; i < 20; i++) {
		char buf[1024];
		ssize_t n = recv(ns, buf, sizeof(buf) - 1, 0);
		if (n > 0 && len + (size_t)n + 2 < sizeof(all)) {
			memcpy(all + len, buf, (size_t)n);
			len += (size_t)n;
			all[len++] = '\n';
			all[len] = '\0';
		}
	}
	cr_assert_eq(th_wait(d.pid), 0);
	cr_assert(strstr(all, "READY=1"), "%s", all);
	cr_assert(strstr(all, "STATUS=0 clients; bars running"), "%s", all);
	cr_assert(strstr(all, "WATCHDOG=1"), "%s", all);
	char *reload = strstr(all, "RELOADING=1");
	cr_assert(reload, "%s", all);
	cr_assert(strstr(reload, "READY=1"), "no READY=1 after the reload: %s", all);
	cr_assert(strstr(all, "STOPPING=1"), "%s", all);
	close(ns);
	remove_dir(d.dir);
}

/* systemd socket activation: systemd-socket-activate listens, starts the
 * daemon on the first connection and passes it the listening socket. */
Test(daemon, socket_activation)
{
	struct daemon d;
	make_dir(&d);
	write_file(d.config, lavfi_config);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int log = open(d.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(log, STDOUT_FILENO);
		dup2(log, STDERR_FILENO);
		execlp("systemd-socket-activate", "systemd-socket-activate", "--seqpacket", "-l",
		       d.socket, FRAMEBUSD_PATH, "--config", d.config, (char *)NULL);
		_exit(127);
	}
	fb_client *c = NULL;
	for (int i = 0; i < 500 && fb_client_connect(d.socket, "activated", &c) < 0; i++)
		th_sleep_us(10000);
	cr_assert_not_null(c, "no daemon behind the activation socket:\n%s", read_file(d.log));
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert(strstr(read_file(d.log), "(the socket systemd passed"), "%s",
		  read_file(d.log));
	fb_client_free(c);
	kill(pid, SIGTERM);
	cr_assert_eq(th_wait(pid), 0, "%s", read_file(d.log));
	remove_dir(d.dir);
}

/* Under systemd (JOURNAL_STREAM naming its stderr) the daemon logs to the
 * journal with structured fields.  The journal here is a socket of the test's
 * own, at journald's path inside a private mount namespace. */
Test(daemon, logs_to_the_journal_with_fields)
{
	struct daemon d;
	int result[2];

	make_dir(&d);
	write_file(d.config, lavfi_config);
	cr_assert_eq(pipe(result), 0);
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		struct sockaddr_un addr = {.sun_family = AF_UNIX,
					   .sun_path = "/run/systemd/journal/socket"};
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("tmpfs", "/run", "tmpfs", 0, NULL) < 0 ||
		    system("mkdir -p /run/systemd/journal") != 0)
			_exit(3);
		int js = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (bind(js, (struct sockaddr *)&addr, sizeof(addr)) < 0)
			_exit(4);
		int log = open(d.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		struct stat st;
		fstat(log, &st);
		char stream[64];
		snprintf(stream, sizeof(stream), "%llu:%llu", (unsigned long long)st.st_dev,
			 (unsigned long long)st.st_ino);
		pid_t daemon_pid = fork();
		if (daemon_pid == 0) {
			dup2(log, STDERR_FILENO);
			setenv("JOURNAL_STREAM", stream, 1);
			exec_daemon(
			    (const char *[]){"--config", d.config, "--socket", d.socket, NULL});
			_exit(127);
		}
		/* Wait for a message about the stream, then stop the daemon. */
		char all[65536] = "";
		size_t len = 0;
		uint64_t until = fb_now_ns() + 5000000000u;
		struct timeval tv = {.tv_usec = 100000};
		setsockopt(js, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		while (fb_now_ns() < until && !strstr(all, "opened testsrc2")) {
			ssize_t n = recv(js, all + len, sizeof(all) - len - 2, 0);
			if (n > 0) {
				len += (size_t)n;
				all[len++] = '\n';
			}
		}
		kill(daemon_pid, SIGTERM);
		th_wait(daemon_pid);
		(void)!write(result[1], all, len + 1);
		_exit(0);
	}
	close(result[1]);
	static char got[65536];
	size_t len = 0;
	ssize_t n;
	while ((n = read(result[0], got + len, sizeof(got) - len - 1)) > 0)
		len += (size_t)n;
	got[len] = '\0';
	int status = th_wait(pid);
	cr_assert_eq(status, 0, "namespace setup failed (%d)", status);
	cr_assert(strstr(got, "MESSAGE=stream bars: opened testsrc2"), "%s", got);
	cr_assert(strstr(got, "FRAMEBUS_STREAM=bars"), "%s", got);
	cr_assert(strstr(got, "PRIORITY=6"), "%s", got);
	cr_assert(strstr(got, "SYSLOG_IDENTIFIER=framebusd"), "%s", got);
	cr_assert_null(strstr(read_file(d.log), "opened testsrc2"), "also on stderr: %s",
		       read_file(d.log));
	remove_dir(d.dir);
}
