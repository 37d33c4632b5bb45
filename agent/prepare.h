/* Getting an attempt's working folder ready before its process starts:
 * the bundle's manifest and files fetched into the cache (what is not
 * there yet), unpacked into the folder, then Dispatch.files written. Each
 * step that touches files runs on the thread pool; the loop only moves the
 * steps on. When done it calls agent_prepared(). */
#ifndef LOOM_AGENT_PREPARE_H
#define LOOM_AGENT_PREPARE_H

#include "agent_int.h"

typedef struct prep prep_t;

/* Whether a dispatch needs preparing (a bundle or files). */
bool prep_needed(const Loom__Dispatch *d);
/* Takes the Dispatch message; t->prep is set. */
void prep_start(loom_agent_t *a, attempt_t *t, loom_msg_t *msg);
/* The attempt lets go (cancelled, forgotten, agent stopping): agent_prepared
 * will not be called; the preparation frees itself once its outstanding
 * work has returned. Clears t->prep. */
void prep_detach(attempt_t *t);

/* Reads t's metrics file on the thread pool, then calls done(t, json,
 * error) on the loop (the strings are borrowed). t must stay alive: the
 * caller marks it finishing. */
void prep_read_metrics(loom_agent_t *a, attempt_t *t,
                       void (*done)(attempt_t *t, const char *json, const char *error));

#endif
