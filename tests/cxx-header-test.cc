/* SPDX-License-Identifier: MIT */
/* The public header as a C++ program sees it (built with -Wall -Wextra
 * -Werror -pedantic, as C++11): its extern "C" guards, structs, enums and
 * callback types, and calls into the shared library.  Prints TAP. */
#include <framebus/framebus.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace
{

int n_tests;
int n_failed;

void check(bool ok, const char *what)
{
	n_tests++;
	if (!ok)
		n_failed++;
	std::printf("%s %d - %s\n", ok ? "ok" : "not ok", n_tests, what);
}

struct seen {
	int calls;
	uint32_t state;
	char stream[FB_NAME_MAX + 1];
};

void on_event(void *userdata, const char *stream, uint32_t state, const char *detail)
{
	seen *s = static_cast<seen *>(userdata);
	s->calls++;
	s->state = state;
	std::snprintf(s->stream, sizeof(s->stream), "%s%s", stream, detail);
}

} /* namespace */

int main()
{
	char version[32];
	std::snprintf(version, sizeof(version), "%d.%d.%d", FB_VERSION_MAJOR, FB_VERSION_MINOR,
		      FB_VERSION_MICRO);
	check(std::strcmp(fb_version(), version) == 0, "fb_version() is the header's version");

	const char *name = fb_format_name(FB_FORMAT_BGR24);
	check(name && std::strcmp(name, "bgr24") == 0, "fb_format_name(FB_FORMAT_BGR24)");
	check(fb_format_name(0) == nullptr, "fb_format_name() of an unknown format is NULL");
	check(fb_format_from_name("nv12") == FB_FORMAT_NV12, "fb_format_from_name(\"nv12\")");

	fb_layout layout;
	int r = fb_layout_compute(640, 480, FB_FORMAT_YUV420P, &layout);
	check(r == 0 && layout.n_planes == 3 && layout.stride[0] % 64 == 0 &&
		  layout.plane_height[1] == 240,
	      "fb_layout_compute() fills a struct fb_layout");
	check(fb_layout_compute(641, 480, FB_FORMAT_NV12, &layout) == -EINVAL,
	      "fb_layout_compute() refuses an odd size for nv12");

	struct fb_ring_params params = {};
	params.format = FB_FORMAT_GRAY8;
	params.policy = FB_POLICY_BLOCK;
	params.slots = FB_MIN_SLOTS;
	check(params.width == 0 && params.slots == 2, "struct fb_ring_params zero-initialised");

	seen s = {};
	fb_client_event_fn fn = on_event;
	fn(&s, "cam0", FB_STREAM_RUNNING, "");
	check(s.calls == 1 && s.state == FB_STREAM_RUNNING && std::strcmp(s.stream, "cam0") == 0,
	      "an fb_client_event_fn defined in C++");

	check(std::strcmp(fb_stream_state_name(FB_STREAM_RETRYING), "retrying") == 0,
	      "fb_stream_state_name(FB_STREAM_RETRYING)");
	check(fb_strerror(-ENOENT) != nullptr, "fb_strerror()");

	fb_client *client = nullptr;
	fb_client_free(client);
	fb_producer_free(nullptr);
	fb_subscriber_free(nullptr);
	check(true, "the destructors accept nullptr");

	std::printf("1..%d\n", n_tests);
	return n_failed ? 1 : 0;
}
