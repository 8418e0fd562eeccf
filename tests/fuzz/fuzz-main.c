/* SPDX-License-Identifier: MIT */
/*
 * Replays a fuzz target's corpus as an ordinary test, without libFuzzer: each
 * argument is a file or a directory of files, each file one input to
 * LLVMFuzzerTestOneInput.  Prints TAP, one line per input; a crash or a
 * sanitizer report fails the test.  (scripts/fuzz builds the same targets
 * with libFuzzer to search for new inputs.)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count;

static void replay(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		printf("not ok %d - cannot open %s\n", ++count, path);
		return;
	}
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	rewind(f);
	uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
	size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
	fclose(f);
	LLVMFuzzerTestOneInput(buf, got);
	free(buf);
	printf("ok %d - %s\n", ++count, path);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n");
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			struct dirent **names;
			int n = scandir(argv[i], &names, NULL, by_name);
			for (int j = 0; j < n; j++) {
				char path[4096];
				if (names[j]->d_name[0] != '.') {
					snprintf(path, sizeof(path), "%s/%s", argv[i],
						 names[j]->d_name);
					replay(path);
				}
				free(names[j]);
			}
			free(names);
		} else
			replay(argv[i]);
	}
	printf("1..%d\n", count);
	return count ? 0 : 1;
}
