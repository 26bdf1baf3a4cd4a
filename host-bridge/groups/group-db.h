/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * group-db.h — groups in the journal of the bridge that runs their control instance.
 */
#ifndef BRIDGE_GROUP_DB_H
#define BRIDGE_GROUP_DB_H

#include <json-c/json.h>
#include <stdint.h>

#include "db.h"

/* Create group @name. 0, 1 if it exists already, -1 on a journal error. */
int group_db_create(struct bridge_db *db, const char *name);
/* 1 if group @name exists, 0 if not, -1 on error. */
int group_db_exists(struct bridge_db *db, const char *name);
/* Add @vm on @bridge ("self" or a peer) to @group. 0, or -1. */
int group_db_add(struct bridge_db *db, const char *group, const char *bridge, const char *vm);
/* The members of @group as a JSON array of {"bridge","vm"} (NULL on error). */
json_object *group_db_members(struct bridge_db *db, const char *group);
/* Append an operation's outcome to @group's history; @detail is JSON text. 0, or -1. */
int group_db_history_add(struct bridge_db *db, const char *group, const char *op, int64_t target_ns,
                         const char *outcome, const char *detail);
/* @group's last @limit history entries, newest first (NULL on error). */
json_object *group_db_history(struct bridge_db *db, const char *group, int limit);

#endif
