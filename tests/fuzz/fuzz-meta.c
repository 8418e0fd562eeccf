/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the tools' meta as JSON (tools/meta.c), on any meta a
 * producer may write.  Besides crashes it checks that what they write is
 * JSON: framebus-mqtt publishes it and framebus-record's sidecar holds it.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What write() writes to a memory stream, or abort. */
static char *written(void (*write)(FILE *, const uint8_t *, size_t), const uint8_t *data,
		     size_t size, size_t *len, const char *before, const char *after)
{
	char *text = NULL;
	FILE *out = open_memstream(&text, len);
	if (!out)
		abort();
	fputs(before, out);
	write(out, data, size);
	fputs(after, out);
	if (fclose(out) != 0)
		abort();
	return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len;
	bool valid = json_valid(data, size);

	/* A string, whatever the bytes. */
	char *text = written(json_text, data, size, &len, "", "");
	if (!json_valid((const uint8_t *)text, len))
		abort();
	free(text);

	/* A member: "meta": the JSON itself (as deep as it was, so checked
	 * alone: json_valid() stops at 64 levels), else a string. */
	text = written(json_meta, data, size, &len, "{", "}");
	static const char member[] = "{\"meta\":";
	if (valid) {
		if (strncmp(text, member, strlen(member)) ||
		    !json_valid((const uint8_t *)text + strlen(member), len - strlen(member) - 1))
			abort();
	} else if (!json_valid((const uint8_t *)text, len)) {
		abort();
	}
	free(text);
	return 0;
}
