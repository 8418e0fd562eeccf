/* SPDX-License-Identifier: MIT */
/* Rates and percentiles over fixed windows (rates.h). */
#include <stdbool.h>

#include "rates.h"

void fbd_window_push(struct fbd_window *w, const struct fbd_sample *sample)
{
	w->samples[w->next] = *sample;
	w->next = (w->next + 1) % FBD_WINDOW_SAMPLES;
	if (w->n < FBD_WINDOW_SAMPLES)
		w->n++;
}

/* The i-th kept sample, 0 the oldest. */
static const struct fbd_sample *kept(const struct fbd_window *w, uint32_t i)
{
	return &w->samples[(w->next + FBD_WINDOW_SAMPLES - w->n + i) % FBD_WINDOW_SAMPLES];
}

double fbd_window_rate(const struct fbd_window *w, const struct fbd_sample *now, uint64_t span_ns)
{
	const struct fbd_sample *from = NULL;
	/* The newest sample at least span_ns old, else the oldest. */
	for (uint32_t i = 0; i < w->n; i++) {
		const struct fbd_sample *s = kept(w, i);
		if (i == 0 || (now->ns >= s->ns && now->ns - s->ns >= span_ns))
			from = s;
	}
	if (!from || now->ns <= from->ns || now->count < from->count)
		return 0;
	return (double)(now->count - from->count) * 1e9 / (double)(now->ns - from->ns);
}

uint32_t fbd_window_percentile_us(const struct fbd_window *w, const struct fbd_sample *now,
				  bool busy, unsigned pct)
{
	if (!w->n)
		return 0;
	const uint32_t *a = busy ? kept(w, 0)->busy : kept(w, 0)->wait;
	const uint32_t *b = busy ? now->busy : now->wait;
	uint64_t delta[FB__TIMING_BUCKETS], total = 0;
	for (uint32_t i = 0; i < FB__TIMING_BUCKETS; i++) {
		delta[i] = (uint32_t)(b[i] - a[i]); /* counters wrap */
		total += delta[i];
	}
	if (!total)
		return 0;
	uint64_t want = (total * pct + 99) / 100, seen = 0;
	for (uint32_t i = 0; i < FB__TIMING_BUCKETS; i++) {
		seen += delta[i];
		if (seen >= want && delta[i]) {
			uint64_t lo = fb__timing_bucket_floor_ns(i);
			uint64_t hi =
			    i + 1 < FB__TIMING_BUCKETS ? fb__timing_bucket_floor_ns(i + 1) : lo * 2;
			return (uint32_t)((lo + hi) / 2 / 1000u);
		}
	}
	return 0;
}
