/* SPDX-License-Identifier: MIT */
/*
 * A C consumer of the framebus stream of bench/compare (PROTOCOL.md), for the
 * row that compares framebus with iceoryx, which has no Python binding:
 *
 *   compare-fb-consumer --frames N --out PATH [--socket PATH] [--sched-slice NS]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <framebus/framebus.h>

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"frames", required_argument, NULL, 'n'},
	    {"out", required_argument, NULL, 'o'},
	    {"sched-slice", required_argument, NULL, 'S'},
	    {"socket", required_argument, NULL, 's'},
	    {0},
	};
	const char *out = NULL, *socket_path = NULL;
	uint64_t frames = 0, n = 0, slice_ns = 0, touched = 0;
	int ch, r, timeout = 15000;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch == 'n')
			frames = strtoull(optarg, NULL, 10);
		else if (ch == 'o')
			out = optarg;
		else if (ch == 'S')
			slice_ns = strtoull(optarg, NULL, 10);
		else if (ch == 's')
			socket_path = optarg;
		else
			return 2;
	}
	uint64_t(*records)[3] = calloc(frames ? frames : 1, sizeof(*records));
	fb_client *c;
	fb_subscriber *sub;
	if (!out || !frames || !records) {
		fprintf(stderr, "usage: compare-fb-consumer --frames N --out PATH [--socket PATH] "
				"[--sched-slice NS]\n");
		return 2;
	}
	/* The consumer thread's fair-scheduler slice (compare.py's TRANSPORT+slice),
	 * set with framebus's helper whatever the transport. */
	int slice_r = slice_ns ? fb_thread_set_sched_slice(slice_ns, NULL) : 0;
	if (slice_r < 0) {
		fprintf(stderr, "compare-fb-consumer: --sched-slice: %s\n", fb_strerror(slice_r));
		return 1;
	}
	if ((r = fb_client_connect(socket_path, "compare-fb-consumer", &c)) < 0 ||
	    (r = fb_client_subscribe(c, "compare", FB_MODE_QUEUE, 0, &sub)) < 0) {
		fprintf(stderr, "compare-fb-consumer: %s\n", fb_strerror(r));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (n < frames) {
		const struct fb_frame *f;
		if ((r = fb_subscriber_acquire(sub, timeout, &f)) < 0)
			break; /* the end of the stream, or idle */
		uint64_t t = fb_now_ns();
		const uint8_t *p = f->data[0];
		memcpy(&records[n][0], p, 8);
		memcpy(&records[n][1], p + 8, 8);
		records[n][2] = t;
		const struct fb_layout *l = fb_subscriber_get_layout(sub);
		for (uint64_t i = 0; i < l->frame_size; i += 64)
			touched += p[i];
		fb_subscriber_release(sub, f);
		n++;
		timeout = 3000;
	}
	FILE *fp = fopen(out, "wb");
	if (!fp || fwrite(records, sizeof(*records), n, fp) != n || fclose(fp) != 0) {
		fprintf(stderr, "compare-fb-consumer: cannot write %s\n", out);
		return 1;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("touched=%llu\ncpu=%.3f\n", (unsigned long long)touched,
	       (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
		   (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	fb_client_unsubscribe(c, sub);
	fb_client_free(c);
	free(records);
	return 0;
}
