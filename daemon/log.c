/* SPDX-License-Identifier: MIT */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "log.h"

static int max_level = LOG_INFO;

void fbd_log_set_level(int level)
{
	max_level = level;
}

void fbd_log(int level, const char *fmt, ...)
{
	static const char *const words[] = {"emergency", "alert", "critical", "error",
					    "warning", "notice", "info", "debug"};
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	char line[1024];
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line, whole, whichever thread logs. */
	pthread_mutex_lock(&lock);
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "framebusd: %s: %s\n", words[level & 7], line);
	else
		fprintf(stderr, "<%d>%s: %s\n", level & 7, words[level & 7], line);
	fflush(stderr);
	pthread_mutex_unlock(&lock);
}
