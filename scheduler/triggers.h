/* The trigger engine's model (triggers.c: pipelines, admission, the timer;
 * trig_sources.c: schedules, data folders, events). Each pipeline's latest
 * version says what starts its runs; every trigger, whatever its kind,
 * becomes a firing that passes one admission policy, and every decision is
 * recorded so `loom triggers --explain` can say why. */
#ifndef LOOM_TRIGGERS_H
#define LOOM_TRIGGERS_H

#include "sched_internal.h"
#include "watch.h"

#include "loom/cron.h"

typedef enum { OVERLAP_QUEUE, OVERLAP_SKIP, OVERLAP_CANCEL } overlap_t;

typedef struct {
    uint32_t max_active; /* 0: no limit */
    overlap_t overlap;
    uint64_t debounce_ms, cooldown_ms;
} trig_policy_t;

/* One trigger firing: what it asks the pipeline to run with. */
typedef struct {
    const char *kind; /* "schedule", "data", "event" (static) */
    char *what;       /* one line for the decision log */
    json_t *origin;   /* {"kind", "trigger", ...}: recorded with the run */
    json_t *event;    /* event.* / trigger.files for the tasks; may be NULL */
    json_t *params;   /* the trigger's parameters (an object) */
} firing_t;

typedef struct trig_pipe trig_pipe_t;

typedef struct {
    trig_pipe_t *tp;
    int index; /* position in the DAG's triggers */
    char *key; /* "CRON|ZONE": keeps its last fire time across versions */
    char *cron_text, *tz_name;
    loom_cron_t cron;
    loom_tz_t *tz;
    int catchup; /* 0 none, 1 latest, 2 all */
    json_t *params;
    char *when;
    int64_t last_fire_s, next_s; /* next_s < 0: never again */
} sched_trig_t;

typedef struct {
    trig_pipe_t *tp;
    int index;
    char *key; /* "PATH|GLOB|RECURSIVE" */
    char *path, *glob;
    bool recursive;
    uint64_t settle_ms, max_wait_ms;
    uint32_t max_files;
    json_t *params;
    char *when;
    loom_watch_t *watch;
    char *error;          /* the watch's latest problem (folder missing...), or NULL */
    json_t *batch;        /* paths arrived and waiting for a run */
    uint64_t batch_since; /* wall ms the oldest waiting file arrived */
} data_trig_t;

typedef struct {
    int index;
    char *name;
    char *when;
    json_t *params;
    uint32_t consecutive; /* fire after this many passing events in a row; 0/1: each */
    char *streak_key;     /* where the current streak is kept */
    int64_t streak;
} event_trig_t;

typedef struct queued {
    struct queued *next;
    uint64_t id; /* trigger_queue row */
    firing_t f;
} queued_t;

struct trig_pipe {
    loom_sched_t *s;
    uint64_t id;
    char *name;
    uint32_t version;
    char *source;
    size_t len;
    loom_dag_t *dag;
    trig_policy_t pol;
    bool paused;
    uint64_t last_trigger_run_ms;
    sched_trig_t *scheds;
    size_t n_scheds;
    data_trig_t *datas;
    size_t n_datas;
    event_trig_t *events;
    size_t n_events;
    /* An open debounce window: the triggers it has gathered so far. */
    uint64_t debounce_id, debounce_due;
    firing_t debounce;
    uint32_t debounce_count;
    /* Triggers waiting for a free run slot, oldest first. */
    queued_t *q_head, **q_tail;
    uint32_t n_queued;
};

/* Most triggers a pipeline keeps waiting for a slot (on_overlap: queue). */
#define TRIG_QUEUE_MAX 1000
/* A schedule's fire time older than this when seen is "missed" (catchup). */
#define TRIG_GRACE_S 60

/* triggers.c */
uint64_t trig_now(loom_sched_t *s); /* wall clock, unix ms */
void firing_free(firing_t *f);
/* Passes f through the pipeline's admission policy; takes f. Returns the
 * run started, or 0. A summary of the decision goes to *outcome if set. */
uint64_t trig_admit(loom_sched_t *s, trig_pipe_t *tp, firing_t *f, json_t **outcome);
void trig_decide(loom_sched_t *s, trig_pipe_t *tp, const char *kind, const char *what,
                 const char *decision, uint64_t run_id, const char *reason);
/* Evaluates a trigger's `when` against an event and the trigger's params;
 * true when there is none. */
bool trig_when(const trig_pipe_t *tp, const char *when, json_t *event, json_t *params, char **seen);
void trig_arm_timer(loom_sched_t *s);

/* trig_sources.c */
int sched_trig_load(trig_pipe_t *tp, sched_trig_t *st, const json_t *spec, int index);
void sched_trig_free(sched_trig_t *st);
/* Fires what is due; returns the next fire time (unix s) or -1. */
int64_t sched_trig_tick(loom_sched_t *s, sched_trig_t *st, uint64_t now_ms);
int data_trig_load(trig_pipe_t *tp, data_trig_t *dt, const json_t *spec, int index);
void data_trig_free(data_trig_t *dt);
/* Starts a run for the waiting files if the batch is full or has waited
 * max_wait; returns the wall ms it should be looked at again, or 0. */
uint64_t data_trig_tick(loom_sched_t *s, data_trig_t *dt, uint64_t now_ms, bool force);

#endif
