/* `triggers` and `concurrency`: what starts a pipeline's runs and how many
 * may overlap. Shapes, types and durations are checked here with positions;
 * the result is normalised JSON with every default written out, so the
 * trigger engine reads one fixed shape and never YAML. */
#include "dag_int.h"

#include "loom/cron.h"
#include "loom/tz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- schedule ---- */

/* The expression for the normalised JSON: fields separated by one space,
 * a macro in lower case. The trigger engine parses it again. */
static void cron_normal(const char *s, loom_buf_t *norm)
{
    int fields = 0;
    for (const char *p = s; *p;) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, " \t");
        if (n == 0) break;
        loom_buf_printf(norm, "%s%.*s", fields ? " " : "", (int)n, p);
        fields++;
        p += n;
    }
    if (norm->data && norm->data[0] == '@')
        for (char *p = norm->data; *p; p++)
            if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
}

static bool timezone_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 64 && s[0] != '/' && !strstr(s, "..") &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-/") == n;
}

typedef struct {
    const loom_ynode_t *kind_key, *kind, *timezone, *catchup, *when, *params;
    const loom_ynode_t *timezone_key, *catchup_key, *when_key;
    const loom_ynode_t *consecutive_key, *consecutive;
} trigger_nodes;

/* Parses the expression, as the trigger engine will, and reports what is
 * wrong with it, including an expression that never fires ("0 0 30 2 *"). */
static void cron_check(pctx *c, const trigger_nodes *n, loom_buf_t *norm)
{
    const loom_ynode_t *v = n->kind;
    char why[320], got[LOOM_YQUOTE_MAX];
    loom_cron_t cron;
    loom_tz_t *utc = NULL;
    if (v->kind != LOOM_YSCALAR || loom_ynode_is_null(v)) {
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, dag_where(n->kind_key, v),
                  "\"schedule\" must be a cron expression of 5 fields such as \"0 3 * * *\", or "
                  "@hourly, @daily, @weekly, @monthly or @yearly, got %s",
                  got);
        return;
    }
    if (loom_cron_parse(v->str, &cron, why, sizeof why) != 0) {
        dag_error(c, v, "invalid \"schedule\": %s", why);
        return;
    }
    /* Any such expression fires within 8 years of any date if it ever
     * does: try from 2000-01-01 in UTC. */
    bool fires = loom_tz_load("UTC", &utc, why, sizeof why) == 0 &&
                 loom_cron_next(&cron, utc, 946684800) != -1;
    loom_tz_free(&utc);
    if (!fires) {
        dag_error(c, v, "\"schedule\" %s never fires: no date matches its day-of-month and month",
                  dag_qname(v->str, got));
        return;
    }
    cron_normal(v->str, norm);
}

static void schedule_fields(pctx *c, const trigger_nodes *n, json_t *o)
{
    static const char *const catchups[] = {"none", "latest", "all", NULL};
    char got[LOOM_YQUOTE_MAX];
    loom_buf_t cron = {0};
    cron_check(c, n, &cron);
    json_object_set_new(o, "cron", json_string(cron.data ? cron.data : ""));
    loom_buf_free(&cron);
    const char *tz = "UTC";
    if (n->timezone) {
        tz = dag_want_string(c, n->timezone_key, n->timezone);
        if (tz && !timezone_ok(tz)) {
            loom_ynode_describe(n->timezone, got, sizeof got);
            dag_error(c, n->timezone,
                      "\"timezone\" must be a zone name such as \"UTC\" or \"Europe/Berlin\", "
                      "got %s",
                      got);
        } else if (tz) {
            /* Checked against this machine's zoneinfo, as loomd will use it. */
            loom_tz_t *zone = NULL;
            char why[320];
            if (loom_tz_load(tz, &zone, why, sizeof why) != 0) dag_error(c, n->timezone, "%s", why);
            loom_tz_free(&zone);
        }
    }
    json_object_set_new(o, "timezone", json_string(tz ? tz : ""));
    int catchup = n->catchup ? dag_want_enum(c, n->catchup_key, n->catchup, catchups) : 0;
    json_object_set_new(o, "catchup", json_string(catchups[catchup < 0 ? 0 : catchup]));
}

/* ---- data ---- */

static bool abs_path_ok(const char *s)
{
    if (s[0] != '/') return false;
    for (const char *p = s; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.') return false;
        p += n;
        if (*p == '/') p++;
    }
    return true;
}

typedef struct {
    const char *path, *glob;
    int recursive;
    uint64_t settle_ms, max_wait_ms;
    int64_t max_files;
} data_spec;

static void data_batch(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, data_spec *d)
{
    static const char *const keys[] = {"max_files", "max_wait", NULL};
    char got[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, dag_where(k, v), "\"batch\" must be a mapping {max_files, max_wait}, got %s",
                  got);
        return;
    }
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *bk = v->pairs[i].key, *bv = v->pairs[i].value;
        if (strcmp(bk->str, "max_wait") == 0) {
            dag_want_duration(c, bk, bv, &d->max_wait_ms);
        } else if (strcmp(bk->str, "max_files") == 0) {
            if (bv->kind != LOOM_YSCALAR || loom_parse_i64(bv->str, 1, 100000, &d->max_files)) {
                loom_ynode_describe(bv, got, sizeof got);
                dag_error(c, dag_where(bk, bv),
                          "\"max_files\" must be an integer 1..100000, got %s", got);
            }
        } else {
            dag_suggest_word(c, bk->str, keys, hint, sizeof hint);
            dag_error(c, bk, "unknown key %s in \"batch\"%s", dag_qname(bk->str, got), hint);
        }
    }
}

static void data_path(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, data_spec *d)
{
    char got[LOOM_YQUOTE_MAX];
    d->path = dag_want_string(c, k, v);
    if (d->path && strncmp(d->path, "s3://", 5) == 0) {
        /* A bucket (and prefix) whose notifications come to /api/v1/hooks/s3. */
        const char *bucket = d->path + 5;
        size_t n = strcspn(bucket, "/");
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(n < 63 ? n : 63), bucket);
        if (n == 0 || n > 63 || !loom_name_valid(name) || strstr(d->path, "/../") ||
            (strlen(d->path) >= 3 && strcmp(d->path + strlen(d->path) - 3, "/..") == 0)) {
            dag_error(c, v, "an S3 location must be s3://BUCKET or s3://BUCKET/PREFIX, got %s",
                      dag_qname(d->path, got));
            d->path = NULL;
        }
    } else if (d->path && !abs_path_ok(d->path)) {
        dag_error(c, v,
                  "the folder to watch must be an absolute path without \"..\" (or "
                  "s3://BUCKET/PREFIX), got %s",
                  dag_qname(d->path, got));
        d->path = NULL;
    }
}

static void data_key(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v, data_spec *d)
{
    static const char *const keys[] = {"path", "glob", "recursive", "settle", "batch", NULL};
    char got[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    if (strcmp(k->str, "path") == 0) {
        data_path(c, k, v, d);
    } else if (strcmp(k->str, "glob") == 0) {
        d->glob = dag_want_string(c, k, v);
        if (d->glob && strchr(d->glob, '/'))
            dag_error(c, v, "\"glob\" matches file names, such as \"*.csv\"; it cannot hold \"/\"");
    } else if (strcmp(k->str, "recursive") == 0) {
        dag_want_bool(c, k, v, &d->recursive);
    } else if (strcmp(k->str, "settle") == 0) {
        dag_want_duration(c, k, v, &d->settle_ms);
    } else if (strcmp(k->str, "batch") == 0) {
        data_batch(c, k, v, d);
    } else {
        dag_suggest_word(c, k->str, keys, hint, sizeof hint);
        dag_error(c, k, "unknown key %s in \"data\"%s", dag_qname(k->str, got), hint);
    }
}

/* data: FOLDER, or {path, glob, recursive, settle, batch: {max_files, max_wait}}. */
static void data_fields(pctx *c, const trigger_nodes *n, json_t *o)
{
    data_spec d = {.glob = "*", .settle_ms = 5000, .max_files = 1};
    const loom_ynode_t *v = n->kind;
    char got[LOOM_YQUOTE_MAX];
    if (v->kind == LOOM_YSCALAR && !loom_ynode_is_null(v)) {
        data_path(c, n->kind_key, v, &d); /* the shorthand: the folder alone */
    } else if (v->kind == LOOM_YMAP) {
        for (size_t i = 0; i < v->n_pairs; i++) data_key(c, v->pairs[i].key, v->pairs[i].value, &d);
        if (!loom_ynode_get(v, "path"))
            dag_error(c, v, "\"data\" needs a \"path\": the folder to watch");
        const loom_ynode_t *batch = loom_ynode_get(v, "batch");
        if (batch && d.max_files > 1 && d.max_wait_ms == 0)
            dag_error(c, batch,
                      "a batch of %lld files needs \"max_wait\" too, or files could wait "
                      "for ever for the rest",
                      (long long)d.max_files);
    } else {
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, dag_where(n->kind_key, v),
                  "\"data\" must be a folder or a mapping {path, glob, recursive, settle, batch}, "
                  "got %s",
                  got);
    }
    json_object_set_new(o, "path", json_string(d.path ? d.path : ""));
    json_object_set_new(o, "glob", json_string(d.glob ? d.glob : "*"));
    json_object_set_new(o, "recursive", json_boolean(d.recursive));
    json_object_set_new(o, "settle_ms", json_integer((json_int_t)d.settle_ms));
    json_object_set_new(o, "batch",
                        json_pack("{s:I, s:I}", "max_files", (json_int_t)d.max_files, "max_wait_ms",
                                  (json_int_t)d.max_wait_ms));
}

/* ---- event, and what every trigger may add ---- */

static void event_fields(pctx *c, const trigger_nodes *n, json_t *o)
{
    const char *s = dag_want_string(c, n->kind_key, n->kind);
    char q[LOOM_YQUOTE_MAX];
    if (s && !loom_name_valid(s))
        dag_error(c, n->kind,
                  "invalid event name %s: use 1-63 letters, digits, '_', '.' or '-', not starting "
                  "with '.' or '-'",
                  dag_qname(s, q));
    json_object_set_new(o, "event", json_string(s ? s : ""));
}

/* params: {name: value}, each a declared parameter of the right type. */
static json_t *trigger_params(pctx *c, const loom_ynode_t *v)
{
    char q[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24], what[LOOM_YQUOTE_MAX + 16];
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, q, sizeof q);
        dag_error(c, v, "a trigger's \"params\" must be a mapping of name: value, got %s", q);
        return NULL;
    }
    json_t *o = json_object();
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *k = v->pairs[i].key, *val = v->pairs[i].value;
        const loom_dag_param_t *p = loom_dag_param(c->dag, k->str);
        dag_qname(k->str, q);
        if (!p) {
            dag_suggest(c, k->str, c->dag->params, c->dag->n_params, sizeof *c->dag->params, hint,
                        sizeof hint);
            dag_error(c, k, "unknown param %s%s", q, hint);
            continue;
        }
        snprintf(what, sizeof what, "param %s", q);
        json_t *j = dag_typed_value(c, p->type, val, what);
        if (j) json_object_set_new(o, k->str, j);
    }
    return o;
}

/* ---- a trigger ---- */

/* Sorts a trigger's keys into nodes; reports unknown and clashing ones. */
static void trigger_keys(pctx *c, const loom_ynode_t *item, trigger_nodes *n)
{
    static const char *const keys[] = {"schedule", "data",   "event",       "timezone", "catchup",
                                       "when",     "params", "consecutive", NULL};
    char q[LOOM_YQUOTE_MAX], q2[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    for (size_t i = 0; i < item->n_pairs; i++) {
        const loom_ynode_t *k = item->pairs[i].key, *v = item->pairs[i].value;
        bool kind = strcmp(k->str, "schedule") == 0 || strcmp(k->str, "data") == 0 ||
                    strcmp(k->str, "event") == 0;
        if (kind && n->kind_key) {
            dag_error(c, k, "a trigger has one kind: %s and %s cannot be combined",
                      dag_qname(n->kind_key->str, q), dag_qname(k->str, q2));
        } else if (kind) {
            n->kind_key = k;
            n->kind = v;
        } else if (strcmp(k->str, "timezone") == 0) {
            n->timezone_key = k;
            n->timezone = v;
        } else if (strcmp(k->str, "catchup") == 0) {
            n->catchup_key = k;
            n->catchup = v;
        } else if (strcmp(k->str, "when") == 0) {
            n->when_key = k;
            n->when = v;
        } else if (strcmp(k->str, "params") == 0) {
            n->params = v;
        } else if (strcmp(k->str, "consecutive") == 0) {
            n->consecutive_key = k;
            n->consecutive = v;
        } else {
            dag_suggest_word(c, k->str, keys, hint, sizeof hint);
            dag_error(c, k, "unknown key %s in a trigger%s", dag_qname(k->str, q), hint);
        }
    }
}

static json_t *parse_trigger(pctx *c, const loom_ynode_t *item)
{
    char got[LOOM_YQUOTE_MAX];
    if (item->kind != LOOM_YMAP) {
        loom_ynode_describe(item, got, sizeof got);
        dag_error(c, item, "a trigger must be a mapping such as {schedule: \"0 3 * * *\"}, got %s",
                  got);
        return NULL;
    }
    trigger_nodes n = {0};
    trigger_keys(c, item, &n);
    if (!n.kind_key) {
        dag_error(c, item, "a trigger needs one of \"schedule\", \"data\" or \"event\"");
        return NULL;
    }
    bool schedule = strcmp(n.kind_key->str, "schedule") == 0;
    const loom_ynode_t *only_schedule[] = {n.timezone_key, n.catchup_key};
    for (size_t i = 0; i < 2 && !schedule; i++)
        if (only_schedule[i])
            dag_error(c, only_schedule[i], "\"%s\" applies only to a \"schedule\" trigger",
                      only_schedule[i]->str);
    json_t *o = json_pack("{s:s}", "kind", n.kind_key->str);
    if (schedule)
        schedule_fields(c, &n, o);
    else if (strcmp(n.kind_key->str, "data") == 0)
        data_fields(c, &n, o);
    else
        event_fields(c, &n, o);
    if (n.consecutive_key && strcmp(n.kind_key->str, "event") != 0) {
        dag_error(c, n.consecutive_key, "\"consecutive\" applies only to an \"event\" trigger");
    } else if (n.consecutive) {
        /* Hysteresis: fire only after N events in a row pass `when`. */
        int64_t k = 0;
        if (n.consecutive->kind != LOOM_YSCALAR ||
            loom_parse_i64(n.consecutive->str, 1, 1000, &k) != 0) {
            loom_ynode_describe(n.consecutive, got, sizeof got);
            dag_error(c, dag_where(n.consecutive_key, n.consecutive),
                      "\"consecutive\" must be an integer 1..1000, got %s", got);
        } else if (k > 1) {
            json_object_set_new(o, "consecutive", json_integer((json_int_t)k));
        }
    }
    char *when = NULL;
    if (n.when) dag_check_cond(c, n.when_key, n.when, NO_TASK, &when);
    if (when) json_object_set_new(o, "when", json_string(when));
    free(when);
    json_t *params = n.params && !loom_ynode_is_null(n.params) ? trigger_params(c, n.params) : NULL;
    if (params) json_object_set_new(o, "params", params);
    return o;
}

void dag_parse_triggers(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v)
{
    if (loom_ynode_is_null(v)) return;
    if (v->kind != LOOM_YSEQ) {
        char got[LOOM_YQUOTE_MAX];
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v, "\"triggers\" must be a list, such as [{schedule: \"0 3 * * *\"}], got %s",
                  got);
        return;
    }
    if (v->n_items == 0) return;
    size_t errors = c->n_errors;
    json_t *all = json_array();
    for (size_t i = 0; i < v->n_items; i++) {
        json_t *t = parse_trigger(c, v->items[i]);
        if (t) json_array_append_new(all, t);
    }
    if (c->n_errors == errors) c->dag->triggers_json = dag_json_text(all);
    json_decref(all);
}

/* ---- concurrency ---- */

void dag_parse_concurrency(pctx *c, const loom_ynode_t *k, const loom_ynode_t *v)
{
    static const char *const keys[] = {"max_active_runs", "on_overlap", "debounce", "cooldown",
                                       NULL};
    static const char *const overlaps[] = {"queue", "skip", "cancel_running", NULL};
    char got[LOOM_YQUOTE_MAX], hint[LOOM_YQUOTE_MAX + 24];
    if (loom_ynode_is_null(v)) return;
    if (v->kind != LOOM_YMAP) {
        loom_ynode_describe(v, got, sizeof got);
        dag_error(c, v, "\"concurrency\" must be a mapping such as {max_active_runs: 1}, got %s",
                  got);
        return;
    }
    int64_t max_runs = 1;
    int overlap = 0;
    uint64_t debounce = 0, cooldown = 0;
    size_t errors = c->n_errors;
    for (size_t i = 0; i < v->n_pairs; i++) {
        const loom_ynode_t *ck = v->pairs[i].key, *cv = v->pairs[i].value;
        if (strcmp(ck->str, "max_active_runs") == 0) {
            if (cv->kind != LOOM_YSCALAR || loom_parse_i64(cv->str, 1, 10000, &max_runs) != 0) {
                loom_ynode_describe(cv, got, sizeof got);
                dag_error(c, dag_where(ck, cv),
                          "\"max_active_runs\" must be an integer 1..10000, got %s", got);
            }
        } else if (strcmp(ck->str, "on_overlap") == 0) {
            overlap = dag_want_enum(c, ck, cv, overlaps);
        } else if (strcmp(ck->str, "debounce") == 0) {
            dag_want_duration(c, ck, cv, &debounce);
        } else if (strcmp(ck->str, "cooldown") == 0) {
            dag_want_duration(c, ck, cv, &cooldown);
        } else {
            dag_suggest_word(c, ck->str, keys, hint, sizeof hint);
            dag_error(c, ck, "unknown key %s in \"concurrency\"%s", dag_qname(ck->str, got), hint);
        }
    }
    if (c->n_errors != errors) return;
    json_t *o = json_pack("{s:I, s:s, s:I, s:I}", "max_active_runs", (json_int_t)max_runs,
                          "on_overlap", overlaps[overlap], "debounce_ms", (json_int_t)debounce,
                          "cooldown_ms", (json_int_t)cooldown);
    c->dag->concurrency_json = dag_json_text(o);
    json_decref(o);
}
