/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "log.h"

static int max_level = LOG_INFO;
static bool to_journal;

void fbd_log_init(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	/* systemd sets JOURNAL_STREAM to our stderr's device:inode when it
	 * connects stderr to the journal (sd-daemon(3), systemd.exec(5)). */
	to_journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
		     fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

void fbd_log_set_level(int level)
{
	max_level = level;
}

static void to_stderr(int level, const char *line)
{
	static const char *const words[] = {"emergency", "alert",  "critical", "error",
					    "warning",   "notice", "info",     "debug"};
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

	/* One write per line, whole, whichever thread logs. */
	pthread_mutex_lock(&lock);
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "framebusd: %s: %s\n", words[level & 7], line);
	else
		fprintf(stderr, "<%d>%s: %s\n", level & 7, words[level & 7], line);
	fflush(stderr);
	pthread_mutex_unlock(&lock);
}

static void to_journal_fields(int level, const char *stream, const char *client, const char *line)
{
	char message[1100], priority[16], s[96], c[128];
	struct iovec iov[5];
	int n = 0;

	snprintf(message, sizeof(message), "MESSAGE=%s", line);
	snprintf(priority, sizeof(priority), "PRIORITY=%d", level & 7);
	iov[n++] = (struct iovec){message, strlen(message)};
	iov[n++] = (struct iovec){priority, strlen(priority)};
	iov[n++] = (struct iovec){(void *)"SYSLOG_IDENTIFIER=framebusd", 27};
	if (stream) {
		snprintf(s, sizeof(s), "FRAMEBUS_STREAM=%s", stream);
		iov[n++] = (struct iovec){s, strlen(s)};
	}
	if (client) {
		snprintf(c, sizeof(c), "FRAMEBUS_CLIENT=%s", client);
		iov[n++] = (struct iovec){c, strlen(c)};
	}
	if (sd_journal_sendv(iov, n) < 0)
		to_stderr(level, line);
}

void fbd_log_about(int level, const char *stream, const char *client, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (to_journal)
		to_journal_fields(level, stream, client, line);
	else
		to_stderr(level, line);
}
