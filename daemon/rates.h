/* SPDX-License-Identifier: MIT */
/* Rates and percentiles over fixed windows: a sample of a counter (frames
 * published, frames a subscriber took) and of a subscriber's wait and busy
 * histograms every second, the last ten seconds kept, so that a one-shot
 * `framebusctl status` shows the rate of the last second and of the last
 * ten, not of the time since somebody last asked. */
#ifndef FBD_RATES_H
#define FBD_RATES_H

#include <stdint.h>

#include "ring-private.h"

#define FBD_WINDOW_SAMPLES 11 /* a second apart: ten seconds */

struct fbd_sample {
	uint64_t ns;    /* fb_now_ns() when taken */
	uint64_t count; /* frames so far */
	uint32_t wait[FB__TIMING_BUCKETS];
	uint32_t busy[FB__TIMING_BUCKETS];
};

struct fbd_window {
	struct fbd_sample samples[FBD_WINDOW_SAMPLES];
	uint32_t n;    /* samples kept */
	uint32_t next; /* where the next one goes */
};

/* Keep a sample (the oldest goes once ten seconds are kept). */
void fbd_window_push(struct fbd_window *w, const struct fbd_sample *sample);

/* Frames per second from the kept sample nearest to span_ns before now (the
 * oldest, if none is that old) until now; 0 without one. */
double fbd_window_rate(const struct fbd_window *w, const struct fbd_sample *now, uint64_t span_ns);

/* The pct-th percentile (1..100) in microseconds of wait (busy: false) or
 * busy times counted from the oldest kept sample until now, taken as the
 * middle of its histogram bucket; 0 if no frame was counted. */
uint32_t fbd_window_percentile_us(const struct fbd_window *w, const struct fbd_sample *now,
				  bool busy, unsigned pct);

#endif
