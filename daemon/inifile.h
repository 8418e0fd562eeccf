/* SPDX-License-Identifier: MIT */
/* What reading an INI file with libinih takes besides inih, for
 * framebusd.conf (config.c), framebus-mqtt.conf and framebus-output.conf
 * (tools/): where the reader is, its lines, its first error, and the values
 * the files share. */
#ifndef FBD_INIFILE_H
#define FBD_INIFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

/* A file being read.  line is counted by the program's own line reader
 * (Debian builds inih without INI_HANDLER_LINENO). */
struct fbd_ini_file {
	const char *path;
	FILE *file;
	unsigned line;
	char *error; /* the first error, "PATH:LINE: [SECTION] KEY: WHY" */
	size_t error_size;
	bool failed;
};

/* The next line of f into str (num bytes, inih's buffer), counted, for a
 * program's inih line reader: NULL at the end, once the file failed, or for
 * a line longer than the buffer, which fails the file naming its line (inih
 * would read its rest as another line). */
char *fbd_ini_read_line(struct fbd_ini_file *f, char *str, int num);

/* Whether line is a "[KIND NAME]" section header (blanks before it
 * allowed), with NAME put in name (size bytes); false for other lines and
 * for a NAME that does not fit.  A program's line reader takes note of
 * such sections there: inih says nothing of a section without keys. */
bool fbd_ini_header(const char *line, const char *kind, char *name, size_t size);

/* Says what is wrong with key, unless an error was said already, and marks
 * the file failed.  Without a section (NULL) the message is "PATH:LINE:
 * KEY: WHY".  Returns 0, what an inih handler returns to stop. */
int fbd_ini_fail(struct fbd_ini_file *f, const char *section, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Values: true and *ret set if v is one, false (and *ret untouched) if not. */

/* A whole number from min to max, in C's notation (0x10, 010 octal). */
bool fbd_ini_uint(const char *v, uint64_t min, uint64_t max, uint64_t *ret);
/* true, yes, 1, on / false, no, 0, off. */
bool fbd_ini_bool(const char *v, bool *ret);
/* "500ms", "2s", "1.5", "1m": seconds unless a unit says otherwise; at
 * most a day. */
bool fbd_ini_duration(const char *v, uint64_t *ret_ns);
/* "1048576", "512K", "512M", "2G". */
bool fbd_ini_size(const char *v, uint64_t *ret);
/* One of names (n of them, NULL ones skipped): its index. */
bool fbd_ini_enum(const char *v, const char *const *names, size_t n, uint32_t *ret);
/* An IP address and port, "127.0.0.1:9464" or "[::1]:9464". */
bool fbd_ini_address(const char *v, struct sockaddr_storage *ret);
/* A stream's name as a configuration file may give it: 1 to FB_NAME_MAX
 * letters, digits, '.', '_' or '-'. */
bool fbd_ini_stream_name(const char *v);

/* *dst = a copy of v (the old one freed); false, *dst kept, without memory. */
bool fbd_ini_set_string(char **dst, const char *v);

#endif
