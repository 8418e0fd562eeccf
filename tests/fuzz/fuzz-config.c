/* SPDX-License-Identifier: MIT */
/* Fuzz target: framebusd's configuration parser on any file contents. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	struct fbd_config *c = NULL;
	char error[512];

	/* The parser reads a file: hand it one in memory, under /proc. */
	int fd = memfd_create("fuzz-config", MFD_CLOEXEC);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (fbd_config_load(path, &c, error, sizeof(error)) == 0) {
		/* What the daemon does with a good one: compare and copy streams. */
		for (uint32_t i = 0; i < c->n_streams; i++) {
			struct fbd_stream_config *dup = fbd_stream_config_dup(&c->streams[i]);
			if (dup && !fbd_stream_config_equal(dup, &c->streams[i]))
				abort();
			fbd_stream_config_free(dup);
		}
		fbd_config_free(c);
	} else if (!strstr(error, path))
		abort(); /* every error names the file */
	close(fd);
	return 0;
}
