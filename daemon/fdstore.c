/* SPDX-License-Identifier: MIT */
/* What framebusd keeps in systemd's file-descriptor store across a restart
 * (sd_notify(3) FDSTORE=1, FileDescriptorStoreMax= in the unit), and takes
 * back from it (LISTEN_FDS, LISTEN_FDNAMES):
 *   "listen"  its listening socket, stored once bound: clients that connect
 *             while no daemon runs wait in its backlog;
 *   "state"   a memfd written at a graceful stop: each configured stream's
 *             last frame number, so the next daemon numbers on from it.
 * Anything else systemd passes (but a socket unit's listening socket) is
 * dropped from the store with a warning naming it.  docs/daemon.md,
 * "Restarts", is the user's view. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"

#define LISTEN_NAME "listen"
#define STATE_NAME "state"
#define STATE_MAGIC "framebusd-state 1\n"
#define STATE_MAX (FBD_MAX_STREAMS * (FB__NAME_MAX + 24) + sizeof(STATE_MAGIC))

/* Ask systemd to forget every stored descriptor named name. */
static void forget(const char *name)
{
	sd_notifyf(0, "FDSTOREREMOVE=1\nFDNAME=%s", name);
}

/* Parse a state memfd into d->resume; false (why says what) if it is not
 * one this daemon wrote. */
static bool parse_state(struct fbd_daemon *d, int fd, char *why, size_t size)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > STATE_MAX) {
		snprintf(why, size, "not a file of at most %zu bytes", STATE_MAX);
		return false;
	}
	char *text = calloc(1, (size_t)st.st_size + 1);
	if (!text || pread(fd, text, (size_t)st.st_size, 0) != st.st_size ||
	    strncmp(text, STATE_MAGIC, strlen(STATE_MAGIC)) != 0) {
		free(text);
		snprintf(why, size, "does not start with '%.*s'", (int)strlen(STATE_MAGIC) - 1,
			 STATE_MAGIC);
		return false;
	}
	uint32_t n = 0, line = 1;
	bool ok = true;
	for (char *p = text + strlen(STATE_MAGIC), *end; ok && *p; p = end + 1) {
		line++;
		end = strchr(p, '\n');
		char *tab = end ? memchr(p, '\t', (size_t)(end - p)) : NULL;
		if (!tab || n == FBD_MAX_STREAMS) {
			ok = false;
			break;
		}
		struct fbd_resume *r = &d->resume[n];
		memset(r->name, 0, sizeof(r->name));
		size_t len = (size_t)(tab - p);
		char *num_end;
		errno = 0;
		r->last_seq = strtoull(tab + 1, &num_end, 10);
		ok = len < sizeof(r->name) && num_end == end && tab[1] >= '0' && tab[1] <= '9' &&
		     errno == 0;
		if (ok) {
			memcpy(r->name, p, len);
			ok = fb__name_valid(r->name, sizeof(r->name));
		}
		n++;
	}
	free(text);
	if (!ok) {
		snprintf(why, size, "line %u is not 'STREAM<tab>LAST_SEQ'", line);
		return false;
	}
	d->n_resume = n;
	return true;
}

/* Whether fd is a listening SOCK_SEQPACKET Unix socket. */
static bool is_listening_socket(int fd)
{
	return sd_is_socket_unix(fd, SOCK_SEQPACKET, 1, NULL, 0) > 0;
}

void fbd_fdstore_load(struct fbd_daemon *d)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);

	if (n < 0)
		fbd_warning("ignoring the descriptors systemd passed: %s", strerror(-n));
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = names && names[i] ? names[i] : "unknown";
		char why[128] = "";
		if (is_listening_socket(fd) && d->listen_fd < 0) {
			/* Ours from the store, or a socket unit's (any name). */
			d->listen_fd = fd;
			d->listen_name = strdup(name);
			d->socket_stored = !strcmp(name, LISTEN_NAME);
			fcntl(fd, F_SETFD, FD_CLOEXEC);
			fcntl(fd, F_SETFL, O_NONBLOCK);
			continue;
		}
		if (!strcmp(name, STATE_NAME) && parse_state(d, fd, why, sizeof(why))) {
			fbd_info("fd store: the last daemon's state: %u streams to number on",
				 d->n_resume);
		} else {
			fbd_warning("fd store: dropping descriptor '%s': %s", name,
				    why[0] ? why : "not one framebusd stores");
		}
		/* Taken: it is written again at the next stop. */
		forget(name);
		close(fd);
	}
	for (int i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
}

void fbd_fdstore_keep_socket(struct fbd_daemon *d)
{
	if (d->socket_stored || d->listen_fd < 0 || !getenv("NOTIFY_SOCKET"))
		return;
	int r = sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=" LISTEN_NAME, &d->listen_fd, 1);
	if (r > 0)
		d->socket_stored = true;
	else
		fbd_warning("fd store: cannot store the listening socket: %s",
			    r < 0 ? strerror(-r) : "no NOTIFY_SOCKET");
}

uint64_t fbd_fdstore_take_seq(struct fbd_daemon *d, const char *name)
{
	for (uint32_t i = 0; i < d->n_resume; i++)
		if (!strcmp(d->resume[i].name, name)) {
			uint64_t seq = d->resume[i].last_seq;
			d->resume[i] = d->resume[--d->n_resume];
			return seq;
		}
	return 0;
}

void fbd_fdstore_save(struct fbd_daemon *d)
{
	if (!getenv("NOTIFY_SOCKET"))
		return;
	int fd = memfd_create("framebusd-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	FILE *f = fd >= 0 ? fdopen(dup(fd), "w") : NULL;
	if (!f) {
		fbd_warning("fd store: cannot write the state: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	fputs(STATE_MAGIC, f);
	uint32_t n = 0;
	for (uint32_t i = 0; i < d->n_streams; i++) {
		struct fbd_stream *st = d->streams[i];
		uint64_t seq = st->config && st->ops->last_seq ? st->ops->last_seq(st) : 0;
		if (seq) {
			fprintf(f, "%s\t%llu\n", st->name, (unsigned long long)seq);
			n++;
		}
	}
	bool written = fclose(f) == 0;
	(void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
	int r =
	    written ? sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=" STATE_NAME, &fd, 1) : -EIO;
	if (r > 0)
		fbd_info("fd store: kept the frame numbers of %u streams for the next daemon", n);
	else
		fbd_warning("fd store: cannot store the state: %s", strerror(r < 0 ? -r : EIO));
	close(fd);
}
