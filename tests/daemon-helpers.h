/* SPDX-License-Identifier: MIT */
/* Shared by the daemon test programs (tests/daemon-*-test.c): framebusd end
 * to end, a real daemon on a temporary socket, real sources, real clients, and
 * clients that misbehave.  One program per concern:
 *
 *   daemon-sources-test.c          lavfi, H.264 file and network inputs
 *   daemon-bad-video-test.c        inputs that break, stall or cannot decode
 *   daemon-config-test.c           the shipped config, bad configs, reloads
 *   daemon-systemd-test.c          sd_notify, socket activation, the journal
 *   daemon-publish-test.c          streams that clients publish
 *   daemon-clients-test.c          subscribers and framebusctl; a client or the
 *                                  daemon going away, signals
 *   daemon-hostile-clients-test.c  malformed messages, hogs, outsiders
 *   daemon-access-test.c           access rules, per-user limits, holds,
 *                                  stalled subscribers of block streams
 *
 * Every test is in Criterion suite "daemon" (declared once, in
 * daemon-helpers.c, 60 s per test), so that CRITERION_TEST_PATTERN
 * 'daemon/...' selects tests the same way in every program. */
#ifndef FB_DAEMON_HELPERS_H
#define FB_DAEMON_HELPERS_H

#include <sys/types.h>

#include "test-helpers.h"

/* A daemon a test started: its process and its temporary directory with the
 * socket, the config and the log (its stdout and stderr) in it. */
struct daemon {
	pid_t pid;
	char dir[64];
	char socket[128];
	char config[128];
	char log[128];
};

/* A 320x240 bgr24 lavfi test pattern named "bars", 50 fps, 6 slots. */
extern const char *const lavfi_config;

/* Write text to path (the test fails if it cannot). */
void write_file(const char *path, const char *text);

/* The contents of path (the first 64 KiB; empty if it cannot be read), in a
 * static buffer the next call overwrites. */
char *read_file(const char *path);

/* Make d's temporary directory and name its socket, config and log. */
void make_dir(struct daemon *d);

/* Exec framebusd with args (NULL-terminated), under
 * $FRAMEBUS_TEST_DAEMON_WRAPPER if that is set: a command and its options,
 * split at spaces (scripts/test runs the daemon under valgrind this way). */
void exec_daemon(const char *const *args);

/* Fork framebusd on d's config and socket, its output to d's log, killed if
 * the test dies; with NOTIFY_SOCKET (and WATCHDOG_USEC=200000) if
 * notify_socket is not NULL.  Returns its pid. */
pid_t spawn_daemon(struct daemon *d, const char *notify_socket);

/* Start a daemon on config and wait until it accepts clients. */
void start(struct daemon *d, const char *config);

/* system(cmd): its exit status, or -1 if it did not exit. */
int run(const char *cmd);

/* Remove a directory the test made, and everything in it. */
void remove_dir(const char *dir);

/* SIGTERM the daemon; fail unless it exits 0 and removes its socket; remove
 * its directory. */
void stop(struct daemon *d);

/* A client of d named "test" (the test fails if it cannot connect). */
fb_client *client(struct daemon *d);

/* Wait until stream reaches state (or fail after seconds). */
struct fb_stream_info wait_state(fb_client *c, const char *stream, uint32_t state, double seconds);

/* Descriptors the daemon has open, or -1. */
int daemon_fd_count(const struct daemon *d);

/* Wait until the daemon has n descriptors open (it closes what a client left
 * once it sees the hang-up), or fail after seconds saying what. */
void wait_fd_count(const struct daemon *d, int n, double seconds, const char *what);

/* Wait until the daemon's log says text, or fail after seconds. */
void wait_log(const struct daemon *d, const char *text, double seconds);

/* A raw connection to d's socket, for tests that speak the protocol
 * themselves (as a hostile or an older client would). */
int raw_connect(const struct daemon *d);
/* Say hello on it as the library would (protocol version 2), claiming
 * n_fds_claimed descriptors in the header and passing fds. */
void raw_hello(int fd, const char *name, uint32_t n_fds_claimed, const int *fds);

/* Run fn(d, arg, error, size) in a child with the given uid, gid and
 * supplementary groups (the test process is root); its result, and the text
 * it wrote to error copied to ret_error (AS_USER_ERROR_MAX bytes) if not
 * NULL. */
#define AS_USER_ERROR_MAX 1024
int as_user(const struct daemon *d, uid_t uid, gid_t gid, const gid_t *groups, int n_groups,
	    int (*fn)(const struct daemon *d, void *arg, char *error, size_t size), void *arg,
	    char *ret_error);

/* A port number for a test's own servers on 127.0.0.1 (a test may use the
 * next few too), from the test's pid: 20000 to 39999. */
int free_port(void);

#endif
