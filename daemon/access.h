/* SPDX-License-Identifier: MIT */
/* Access rules ([access NAME] in framebusd.conf) and who is trusted. */
#ifndef FBD_ACCESS_H
#define FBD_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define FBD_PEER_GROUPS 64

/* A client's credentials as the kernel gave them at connect. */
struct fbd_peer {
	uint32_t uid, gid;
	uint32_t n_groups; /* supplementary groups (SO_PEERGROUPS), at most FBD_PEER_GROUPS */
	uint32_t groups[FBD_PEER_GROUPS];
};

enum fbd_access_op {
	FBD_ACCESS_SUBSCRIBE, /* to a stream, or to one derived from it */
	FBD_ACCESS_PUBLISH,   /* a stream of that name */
};

/* Root and the daemon's own user: no rule and no per-user limit applies. */
bool fbd_access_trusted(uint32_t uid);

/* Whether peer may do op on the stream name: 0, or -EACCES with why (the
 * client's error text) and ret_rule (the rule's name, or the configured
 * stream that reserves the name). */
int fbd_access_check(const struct fbd_config *config, const struct fbd_peer *peer,
		     enum fbd_access_op op, const char *name, const char **ret_rule, char *why,
		     size_t size);

#endif
