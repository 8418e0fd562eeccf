/* SPDX-License-Identifier: MIT */
/* A failure and its reason: the text for the caller's why buffer. */
#ifndef FBD_WHY_H
#define FBD_WHY_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Write the reason into why (size bytes) and return error. */
__attribute__((format(printf, 4, 5))) static inline int fbd_fail(char *why, size_t size, int error,
								 const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, size, fmt, ap);
	va_end(ap);
	return error;
}

#endif
