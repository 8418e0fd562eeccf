/* SPDX-License-Identifier: MIT */
/*
 * A frame's meta as JSON, for the tools that hand it on: framebus-record's
 * sidecar and framebus-mqtt's messages.  Meta is whatever bytes a producer
 * wrote; these say whether they are JSON and write them into JSON.
 */
#ifndef FRAMEBUS_TOOLS_META_H
#define FRAMEBUS_TOOLS_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Whether the n bytes at s are one JSON text (RFC 8259: one value, UTF-8,
 * nested at most 64 deep, surrounded by nothing but white space). */
bool json_valid(const uint8_t *s, size_t n);

/* Bytes as a JSON string: UTF-8 as it is; control characters, quotes and
 * backslashes escaped, and any byte that is not UTF-8 as \u00XX (read as
 * Latin-1). */
void json_text(FILE *out, const uint8_t *s, size_t n);

/* A frame's meta as a member of a JSON object: "meta": the JSON itself when
 * it is JSON (on one line), else the text as a string when it is UTF-8 (null
 * when empty), else "meta_base64": the bytes in base64. */
void json_meta(FILE *out, const uint8_t *s, size_t n);

#endif
