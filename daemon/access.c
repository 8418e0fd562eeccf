/* SPDX-License-Identifier: MIT */
/* Who may subscribe to a stream and who may publish a name: the [access]
 * rules of framebusd.conf applied to a client's credentials (SO_PEERCRED,
 * SO_PEERGROUPS).  docs/security.md is the specification. */
#define _GNU_SOURCE
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "access.h"

bool fbd_access_trusted(uint32_t uid)
{
	return uid == 0 || uid == (uint32_t)geteuid();
}

static bool listed(const struct fbd_access_ids *ids, const struct fbd_peer *peer)
{
	for (uint32_t i = 0; i < ids->n_uids; i++)
		if (ids->uids[i] == peer->uid)
			return true;
	for (uint32_t i = 0; i < ids->n_gids; i++) {
		if (ids->gids[i] == peer->gid)
			return true;
		for (uint32_t k = 0; k < peer->n_groups; k++)
			if (ids->gids[i] == peer->groups[k])
				return true;
	}
	return false;
}

/* The first rule whose patterns match name, or NULL. */
static const struct fbd_access_rule *rule_for(const struct fbd_config *config, const char *name)
{
	for (uint32_t i = 0; i < config->n_access; i++) {
		const struct fbd_access_rule *a = &config->access[i];
		for (uint32_t k = 0; k < a->n_patterns; k++)
			if (fnmatch(a->patterns[k], name, 0) == 0)
				return a;
	}
	return NULL;
}

int fbd_access_check(const struct fbd_config *config, const struct fbd_peer *peer,
		     enum fbd_access_op op, const char *name, const char **ret_rule, char *why,
		     size_t size)
{
	const struct fbd_access_rule *a = rule_for(config, name);
	const char *verb = op == FBD_ACCESS_SUBSCRIBE ? "subscribe to" : "publish";

	*ret_rule = NULL;
	if (fbd_access_trusted(peer->uid))
		return 0;
	if (op == FBD_ACCESS_PUBLISH)
		for (uint32_t i = 0; i < config->n_streams; i++)
			if (!strcmp(config->streams[i].name, name)) {
				*ret_rule = config->streams[i].name;
				snprintf(
				    why, size,
				    "'%s' is reserved by [stream %s] of the configuration: only "
				    "framebusd publishes it",
				    name, name);
				return -EACCES;
			}
	if (!a)
		return 0;
	const struct fbd_access_ids *ids = op == FBD_ACCESS_SUBSCRIBE ? &a->subscribe : &a->publish;
	/* An absent subscribe lets anyone subscribe; an absent publish
	 * reserves the names to root and the daemon's user. */
	if ((op == FBD_ACCESS_SUBSCRIBE && !ids->given) || listed(ids, peer))
		return 0;
	*ret_rule = a->name;
	snprintf(why, size, "denied by [access %s]: uid %u may not %s '%s'", a->name,
		 (unsigned)peer->uid, verb, name);
	return -EACCES;
}
