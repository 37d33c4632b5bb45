/* loom-agent's connection to loomd: Hello until welcomed, heartbeats, and
 * the handlers for what loomd sends. Attempts and their buffered output
 * live in attempt.c; this file decides when they are sent. */
#include "agent_int.h"
#include "spawner.h"
#include "cache.h"
#include "exec_slurm.h"
#include "fetch.h"
#include "workdir.h"

#include "loom/curve.h"
#include "loom/err.h"
#include "loom/log.h"

#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_HELLO_MS 1000
#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_MAX_UNACKED (16u * 1024 * 1024)
/* A Hello that could not be sent (no connection yet) is retried this soon,
 * so a reconnect is noticed within ZeroMQ's own reconnect interval. */
#define HELLO_RETRY_MS 100
/* After a failed send (high-water mark, a connection going down) */
#define SEND_RETRY_MS 50
#define RECONNECT_IVL_MS 100
#define RECONNECT_IVL_MAX_MS 5000
/* Hello while waiting for `loom agents approve` */
#define ENROL_RETRY_MS 2000

static char *host_name(void)
{
    char buf[HOST_NAME_MAX + 1];
    if (gethostname(buf, sizeof buf) != 0) return loom_xstrdup("localhost");
    buf[HOST_NAME_MAX] = '\0';
    return loom_xstrdup(buf);
}

loom_agent_t *loom_agent_new(uv_loop_t *loop, const loom_agent_config_t *cfg)
{
    loom_agent_t *a = loom_xcalloc(1, sizeof *a);
    a->loop = loop;
    a->hostname = host_name();
    a->name = loom_xstrdup(cfg->name ? cfg->name : a->hostname);
    a->server = loom_xstrdup(cfg->server ? cfg->server : "tcp://127.0.0.1:8421");
    a->work_dir = loom_xstrdup(cfg->work_dir ? cfg->work_dir : ".");
    a->slots = cfg->slots; /* 0: the usable CPUs, once known (host_init) */
    a->slots_given = cfg->slots != 0;
    a->prefetch = cfg->prefetch;
    a->n_labels = cfg->n_labels;
    agent_task_user_config(a, cfg);
    a->labels = loom_xcalloc(cfg->n_labels + 1, sizeof *a->labels);
    for (size_t i = 0; i < cfg->n_labels; i++) a->labels[i] = loom_xstrdup(cfg->labels[i]);
    a->hello_interval_ms = cfg->hello_interval_ms ? cfg->hello_interval_ms : DEFAULT_HELLO_MS;
    a->kill_grace_ms = cfg->kill_grace_ms ? cfg->kill_grace_ms : LOOM_RUNNER_KILL_GRACE_MS;
    a->keep_attempts = cfg->keep_attempts;
    a->cache_max = cfg->cache_size_bytes ? cfg->cache_size_bytes : CACHE_DEFAULT_MAX;
    a->max_unacked = cfg->max_unacked_bytes ? cfg->max_unacked_bytes : DEFAULT_MAX_UNACKED;
    a->zctx = cfg->zmq_ctx;
    a->clock = cfg->clock.now_ms ? cfg->clock : loom_clock_real();
    a->gpu_specs = loom_xcalloc(cfg->n_gpus + 1, sizeof *a->gpu_specs);
    for (size_t i = 0; i < cfg->n_gpus; i++) a->gpu_specs[i] = loom_xstrdup(cfg->gpus[i]);
    a->n_gpu_specs = cfg->n_gpus;
    a->no_gpu_detect = cfg->no_gpu_detect;
    if (cfg->join_token) a->join_token = loom_xstrdup(cfg->join_token);
    if (cfg->server_key) snprintf(a->server_key, sizeof a->server_key, "%s", cfg->server_key);
    a->on_refused = cfg->on_refused;
    a->refused_ud = cfg->refused_ud;
    a->nvml_library = cfg->nvml_library ? loom_xstrdup(cfg->nvml_library) : NULL;
    a->gpu_timeout_ms = cfg->gpu_detect_timeout_ms;
    a->sys_root = loom_xstrdup(cfg->sys_root ? cfg->sys_root : "");
    a->gpus.source = "none";
    a->exec = &exec_local_ops;
    if (cfg->executor && strcmp(cfg->executor, "local") != 0) {
        a->bad_executor = strcmp(cfg->executor, "slurm") != 0;
        if (!a->bad_executor) {
            char *job_name = loom_xasprintf("loom.%s", a->name);
            char *dir = loom_xasprintf("%s/slurm", a->work_dir);
            slurm_exec_config_t sc = {
                .job_name = job_name,
                .dir = dir,
                .partition = cfg->slurm_partition,
                .account = cfg->slurm_account,
                .qos = cfg->slurm_qos,
                .options = cfg->slurm_options,
                .n_options = cfg->n_slurm_options,
                .poll_ms = cfg->slurm_poll_ms,
            };
            a->slurm = slurm_exec_new(loop, &sc);
            a->exec = &exec_slurm_ops;
            a->exec_state = a->slurm;
            free(job_name);
            free(dir);
        }
    }
    if (sodium_init() < 0) abort(); /* no randomness: nothing safe to do */
    randombytes_buf(a->session, sizeof a->session);
    return a;
}

const char *loom_agent_name(const loom_agent_t *a)
{
    return a->name;
}

bool loom_agent_welcomed(const loom_agent_t *a)
{
    return a->welcomed;
}

uint32_t loom_agent_running(const loom_agent_t *a)
{
    return a->running;
}

size_t loom_agent_unacked_bytes(const loom_agent_t *a)
{
    return a->unacked_bytes;
}

bool loom_agent_output_paused(const loom_agent_t *a)
{
    return a->paused;
}

const char *loom_agent_public_key(const loom_agent_t *a)
{
    return a->curve_pub;
}

bool loom_agent_refused(const loom_agent_t *a)
{
    return a->refused;
}

const uint8_t *loom_agent_session(const loom_agent_t *a)
{
    return a->session;
}

uint64_t loom_agent_cache_bytes(const loom_agent_t *a)
{
    return a->cache ? cache_bytes(a->cache) : 0;
}

uint64_t loom_agent_cache_evicted(const loom_agent_t *a)
{
    return a->cache ? cache_evicted(a->cache) : 0;
}

const char *loom_agent_limit_mechanism(const loom_agent_t *a)
{
    return a->limits ? limits_mechanism(a->limits) : "rlimit";
}

int agent_send(loom_agent_t *a, loom_msg_t *m)
{
    uint8_t *data;
    size_t len;
    int rc = loom_codec_encode(m, &data, &len);
    if (rc != 0) {
        LOG_ERROR("cannot encode %s: %s", loom_codec_kind_name(m->body_case), loom_strerror(rc));
        return rc;
    }
    rc = agent_send_raw(a, data, len);
    free(data);
    return rc;
}

int agent_send_raw(loom_agent_t *a, const uint8_t *data, size_t len)
{
    if (!a->zs) return LOOM_ESTATE;
    const void *parts[1] = {data};
    size_t lens[1] = {len};
    return loom_zsock_send(a->zs, parts, lens, 1);
}

static int send_hello(loom_agent_t *a)
{
    Loom__Hello hello = LOOM__HELLO__INIT;
    hello.name = a->name;
    hello.agent_version = (char *)LOOM_VERSION;
    hello.session.data = a->session;
    hello.session.len = sizeof a->session;
    hello.resources = host_resources(a);
    hello.attempts = agent_held_ids(a, &hello.n_attempts);
    hello.hostname = a->hostname;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HELLO;
    m.hello = &hello;
    int rc = agent_send(a, &m);
    LOG_DEBUG("hello %s agent=%s held=%zu", rc == 0 ? "sent" : "not sent (no connection)", a->name,
              hello.n_attempts);
    host_resources_free(hello.resources);
    free(hello.attempts);
    return rc;
}

static int send_join(loom_agent_t *a)
{
    Loom__Join j = LOOM__JOIN__INIT;
    j.token = a->join_token;
    j.name = a->name;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_JOIN;
    m.join = &j;
    return agent_send(a, &m);
}

static void on_hello_timer(uv_timer_t *handle)
{
    loom_agent_t *a = handle->data;
    if (a->welcomed || a->stopping || a->refused || !a->detected) return;
    int rc = a->joining ? send_join(a) : send_hello(a);
    uint64_t next = a->hello_interval_ms;
    /* Not enrolled yet: ask again every few seconds, not every second. */
    if (a->told_enrol && next < ENROL_RETRY_MS) next = ENROL_RETRY_MS;
    if (rc != 0 && next > HELLO_RETRY_MS) next = HELLO_RETRY_MS;
    uv_timer_start(&a->hello_timer, on_hello_timer, next, 0);
}

/* Back to square one with loomd: Hello now and every interval until a
 * Welcome. Tasks keep running; their output waits in our buffers. Once a
 * Hello is out, the timer repeats it: a burst of "send hello" answers (to
 * every heartbeat and result loomd got before it knew us again) must not
 * become a burst of Hellos, each of which loomd would reconcile anew. */
static void lose_welcome(loom_agent_t *a)
{
    bool hello_out = !a->welcomed && uv_is_active((uv_handle_t *)&a->hello_timer);
    a->welcomed = false;
    uv_timer_stop(&a->heartbeat_timer);
    if (!hello_out) on_hello_timer(&a->hello_timer);
}

static void send_heartbeat(loom_agent_t *a)
{
    Loom__Heartbeat hb = LOOM__HEARTBEAT__INIT;
    hb.sent_unix_ms = loom_unix_ms();
    hb.attempts = agent_held_ids(a, &hb.n_attempts);
    hb.dispatch_seq = a->dispatch_seq;
    hb.running = a->running;
    hb.usage = host_usage(a);
    hb.draining = a->draining;
    loom_msg_t m = LOOM__ENVELOPE__INIT;
    m.body_case = LOOM__ENVELOPE__BODY_HEARTBEAT;
    m.heartbeat = &hb;
    agent_send(a, &m);
    host_usage_free(hb.usage);
    free(hb.attempts);
    /* cgroups that were busy when their attempt ended */
    if (a->limits) limits_sweep(a->limits);
}

static void on_heartbeat_timer(uv_timer_t *handle)
{
    loom_agent_t *a = handle->data;
    uint64_t silent = loom_clock_now(&a->clock) - a->last_heard_ms;
    if (a->timeout_ms && silent > a->timeout_ms) {
        LOG_WARN("loomd silent for %llu ms; saying hello again agent=%s",
                 (unsigned long long)silent, a->name);
        lose_welcome(a);
        return;
    }
    send_heartbeat(a);
    agent_tick_uploads(a);
    uint64_t resend = 3 * (uint64_t)a->heartbeat_ms;
    agent_resend_stale(a, resend < 1000 ? 1000 : resend);
}

static void on_retry_timer(uv_timer_t *handle)
{
    loom_agent_t *a = handle->data;
    a->send_blocked = false;
    agent_flush_all(a);
}

void agent_send_failed(loom_agent_t *a)
{
    /* Later messages wait, so that loomd still gets each attempt's chunks
     * in order and its Finished after them. If the connection is gone the
     * next Welcome resends everything anyway. */
    a->send_blocked = true;
    if (!a->closing) uv_timer_start(&a->retry_timer, on_retry_timer, SEND_RETRY_MS, 0);
}

/* Keeps loomd's key for the next start (which then needs no token). */
static void pin_server_key(loom_agent_t *a)
{
    if (a->pinned) return;
    char *path = loom_xasprintf("%s/curve/server.pub", a->work_dir);
    char why[256];
    if (loom_curve_key_write(path, a->server_key, why, sizeof why) != 0)
        LOG_WARN("cannot pin loomd's key: %s", why);
    else
        a->pinned = true;
    free(path);
}

/* loomd will never take us: stop asking, and let the owner stop us. */
static void refused(loom_agent_t *a)
{
    if (a->refused) return;
    a->refused = true;
    uv_timer_stop(&a->hello_timer);
    uv_timer_stop(&a->heartbeat_timer);
    a->welcomed = false;
    if (a->on_refused) a->on_refused(a->refused_ud);
}

static void handle_joined(loom_agent_t *a, loom_msg_t **mp)
{
    const Loom__Joined *j = (*mp)->joined;
    if (!a->joining) return;
    if (j->error && *j->error) {
        LOG_ERROR("loomd refused the join token agent=%s: %s", a->name, j->error);
        refused(a);
        return;
    }
    if (j->server_public_key && *j->server_public_key &&
        strcmp(j->server_public_key, a->server_key) != 0) {
        LOG_ERROR("loomd answered Join with another server key than the token's; not joining");
        refused(a);
        return;
    }
    LOG_INFO("joined loomd agent=%s key=%s", a->name, a->curve_pub);
    a->joining = false;
    if (a->join_token) {
        sodium_memzero(a->join_token, strlen(a->join_token));
        free(a->join_token);
        a->join_token = NULL;
    }
    pin_server_key(a);
    uv_timer_stop(&a->hello_timer);
    on_hello_timer(&a->hello_timer);
}

static void handle_welcome(loom_agent_t *a, loom_msg_t **mp)
{
    const loom_msg_t *m = *mp;
    const Loom__Welcome *w = m->welcome;
    for (size_t i = 0; i < w->n_cancel; i++) agent_forget_attempt(a, w->cancel[i]);
    a->welcomed = true;
    a->dispatch_seq = 0;
    a->heartbeat_ms = w->heartbeat_ms ? w->heartbeat_ms : DEFAULT_HEARTBEAT_MS;
    a->timeout_ms = w->timeout_ms;
    uv_timer_stop(&a->hello_timer);
    a->told_enrol = false;
    pin_server_key(a);
    uv_timer_start(&a->heartbeat_timer, on_heartbeat_timer, a->heartbeat_ms, a->heartbeat_ms);
    LOG_INFO("welcomed by loomd agent=%s heartbeat_ms=%u timeout_ms=%u cancelled=%zu", a->name,
             a->heartbeat_ms, a->timeout_ms, w->n_cancel);
    /* loomd may have lost anything sent before (it restarted, or the
     * connection dropped): resend every unacknowledged chunk and result. */
    agent_rewind_all(a);
    a->send_blocked = false;
    uv_timer_stop(&a->retry_timer);
    agent_flush_all(a);
    /* Object requests too: loomd answers what reaches it, once. */
    fetcher_resume(a->fetcher);
}

static void handle_heartbeat(loom_agent_t *a, loom_msg_t **mp)
{
    (void)a;
    (void)mp; /* its arrival already refreshed liveness */
}

static void handle_error(loom_agent_t *a, loom_msg_t **mp)
{
    const loom_msg_t *m = *mp;
    const Loom__Error *e = m->error;
    if (e->revoked) {
        LOG_ERROR("loomd revoked this agent's key agent=%s key=%s; stopping", a->name,
                  a->curve_pub);
        refused(a);
        return;
    }
    if (e->not_enrolled) {
        if (!a->told_enrol)
            LOG_WARN("not enrolled agent=%s: on the server, run `loom agents approve %s` (or "
                     "start this agent with a join token from `loom agents token`); asking "
                     "again every %d s",
                     a->name, a->curve_pub, ENROL_RETRY_MS / 1000);
        a->told_enrol = true;
        a->welcomed = false;
        return;
    }
    if (e->hello_required) {
        LOG_INFO("loomd asks for hello agent=%s: %s", a->name, e->message);
        lose_welcome(a);
        return;
    }
    LOG_WARN("loomd error code=%d agent=%s: %s", (int)e->code, a->name, e->message);
}

static void handle_dispatch(loom_agent_t *a, loom_msg_t **mp)
{
    const Loom__Dispatch *d = (*mp)->dispatch;
    if (d->seq > a->dispatch_seq) a->dispatch_seq = d->seq;
    if (a->stopping) {
        LOG_WARN("stopping: ignoring dispatch attempt=%llu", (unsigned long long)d->attempt_id);
        return;
    }
    loom_msg_t *m = *mp;
    *mp = NULL; /* the attempt keeps it while its folder is prepared */
    agent_dispatch(a, m);
}

static void handle_log_ack(loom_agent_t *a, loom_msg_t **mp)
{
    const loom_msg_t *m = *mp;
    agent_ack_log(a, m->log_ack->attempt_id, m->log_ack->seq);
}

static void handle_finished_ack(loom_agent_t *a, loom_msg_t **mp)
{
    const loom_msg_t *m = *mp;
    agent_ack_finished(a, m->finished_ack->attempt_id);
}

static void handle_cancel(loom_agent_t *a, loom_msg_t **mp)
{
    const loom_msg_t *m = *mp;
    agent_cancel(a, m->cancel->attempt_id, m->cancel->reason, m->cancel->if_queued);
}

static void handle_object(loom_agent_t *a, loom_msg_t **mp)
{
    fetcher_on_chunk(a->fetcher, (*mp)->object);
}

static void handle_put_ack(loom_agent_t *a, loom_msg_t **mp)
{
    agent_put_ack(a, (*mp)->put_ack);
}

/* A handler may take the message (and set *m to NULL). */
typedef void (*handler_fn)(loom_agent_t *a, loom_msg_t **m);

static const struct {
    Loom__Envelope__BodyCase kind;
    handler_fn fn;
} handlers[] = {
    {LOOM__ENVELOPE__BODY_WELCOME, handle_welcome},
    {LOOM__ENVELOPE__BODY_HEARTBEAT, handle_heartbeat},
    {LOOM__ENVELOPE__BODY_DISPATCH, handle_dispatch},
    {LOOM__ENVELOPE__BODY_LOG_ACK, handle_log_ack},
    {LOOM__ENVELOPE__BODY_FINISHED_ACK, handle_finished_ack},
    {LOOM__ENVELOPE__BODY_CANCEL, handle_cancel},
    {LOOM__ENVELOPE__BODY_ERROR, handle_error},
    {LOOM__ENVELOPE__BODY_OBJECT, handle_object},
    {LOOM__ENVELOPE__BODY_PUT_ACK, handle_put_ack},
    {LOOM__ENVELOPE__BODY_JOINED, handle_joined},
};

static void handle_msg(loom_agent_t *a, loom_msg_t **m)
{
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
        if (handlers[i].kind == (*m)->body_case) {
            handlers[i].fn(a, m);
            return;
        }
    }
    LOG_WARN("dropping unexpected %s message from loomd agent=%s",
             loom_codec_kind_name((*m)->body_case), a->name);
}

static void on_inbox_idle(uv_idle_t *handle)
{
    loom_agent_t *a = handle->data;
    uv_idle_stop(&a->inbox_idle);
    while (a->inbox && !a->stopping) {
        inbox_msg_t *in = a->inbox;
        a->inbox = in->next;
        if (!a->inbox) a->inbox_tail = NULL;
        handle_msg(a, &in->msg);
        loom_codec_free(in->msg);
        free(in);
    }
}

static void free_inbox(loom_agent_t *a)
{
    while (a->inbox) {
        inbox_msg_t *in = a->inbox;
        a->inbox = in->next;
        loom_codec_free(in->msg);
        free(in);
    }
    a->inbox_tail = NULL;
}

/* Messages are handled from an idle callback, never right here: zsock
 * delivers them from inside loom_zsock_send too, and a handler run in the
 * middle of a send (say, while resending a list of chunks) could free what
 * the sender is walking. */
static void on_socket_message(void *ud, zmq_msg_t *parts, size_t nparts)
{
    loom_agent_t *a = ud;
    char why[256];
    loom_msg_t *m;
    a->last_heard_ms = loom_clock_now(&a->clock);
    if (nparts != 1) {
        LOG_WARN("dropping a %zu-part message from loomd (expected 1) agent=%s", nparts, a->name);
        return;
    }
    if (loom_codec_decode(zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), &m, why, sizeof why)) {
        LOG_WARN("dropping message from loomd agent=%s: %s", a->name, why);
        return;
    }
    if (a->stopping) {
        loom_codec_free(m);
        return;
    }
    inbox_msg_t *in = loom_xcalloc(1, sizeof *in);
    in->msg = m;
    if (a->inbox_tail)
        a->inbox_tail->next = in;
    else
        a->inbox = in;
    a->inbox_tail = in;
    uv_idle_start(&a->inbox_idle, on_inbox_idle);
}

static int check_config(loom_agent_t *a)
{
    if (a->bad_executor) {
        LOG_ERROR("unknown executor: use local or slurm");
        return LOOM_EINVAL;
    }
    if (!loom_name_valid(a->name)) {
        LOG_ERROR("agent name \"%s\" is invalid: use 1-63 of [A-Za-z0-9_.-]", a->name);
        return LOOM_EINVAL;
    }
    for (size_t i = 0; i < a->n_labels; i++) {
        const char *eq = strchr(a->labels[i], '=');
        if (!eq || eq == a->labels[i]) {
            LOG_ERROR("label \"%s\" is not key=value", a->labels[i]);
            return LOOM_EINVAL;
        }
    }
    char why[512];
    if (gpu_check_specs((const char *const *)a->gpu_specs, a->n_gpu_specs, why, sizeof why)) {
        LOG_ERROR("%s", why);
        return LOOM_EINVAL;
    }
    return 0;
}

/* Attempts see LOOM_WORK_DIR after a chdir, so the folder must be absolute. */
static int prepare_work_dir(loom_agent_t *a)
{
    char *attempts = loom_xasprintf("%s/attempts", a->work_dir);
    int rc = loom_mkdirs(attempts, 0700);
    free(attempts);
    char *abs = rc == 0 ? realpath(a->work_dir, NULL) : NULL;
    if (!abs) {
        LOG_ERROR("cannot create work folder %s: %s", a->work_dir, strerror(errno));
        return LOOM_EIO;
    }
    free(a->work_dir);
    a->work_dir = abs;
    a->cache_dir = loom_xasprintf("%s/cache", a->work_dir);
    if (workdir_cache_init(a->cache_dir) != 0) {
        LOG_ERROR("cannot create cache folder %s: %s", a->cache_dir, strerror(errno));
        return LOOM_EIO;
    }
    if (a->slurm) {
        /* Batch scripts and the jobs' output files: beside the attempt
         * folders, on the filesystem the nodes share. */
        char *dir = loom_xasprintf("%s/slurm", a->work_dir);
        int rc2 = loom_mkdirs(dir, 0700);
        if (rc2 == 0) slurm_exec_set_dir(a->slurm, dir);
        if (rc2 != 0) LOG_ERROR("cannot create folder %s: %s", dir, strerror(errno));
        free(dir);
        if (rc2 != 0) return LOOM_EIO;
    }
    return 0;
}

/* What the cache holds, in order of use; trimmed to its bound (the
 * evicted files are unlinked on the thread pool once the loop runs). */
static int load_cache(loom_agent_t *a)
{
    a->cache = cache_new(a, a->cache_dir, a->cache_max);
    if (cache_load(a->cache) != 0) {
        LOG_ERROR("cannot read cache folder %s: %s", a->cache_dir, strerror(errno));
        return LOOM_EIO;
    }
    return 0;
}

/* Our key pair, and which key loomd has: pinned (joined before), from the
 * join token, or given (--server-key, for the approve flow). */
static int load_keys(loom_agent_t *a)
{
    char why[512];
    char *dir = loom_xasprintf("%s/curve", a->work_dir);
    char *pinned_path = loom_xasprintf("%s/server.pub", dir);
    int rc = loom_curve_keypair_load(dir, "agent", a->curve_pub, a->curve_sec, why, sizeof why);
    loom_curve_key_t pinned;
    int prc = rc ? rc : loom_curve_key_read(pinned_path, pinned, why, sizeof why);
    free(dir);
    free(pinned_path);
    if (rc || (prc && prc != LOOM_ENOTFOUND)) {
        LOG_ERROR("%s", why);
        return LOOM_EINVAL;
    }
    if (prc == 0) {
        if (a->server_key[0] && strcmp(a->server_key, pinned) != 0)
            LOG_WARN("--server-key differs from the key pinned when this agent joined; using the "
                     "pinned one (remove WORK_DIR/curve/server.pub to change it)");
        memcpy(a->server_key, pinned, sizeof pinned);
        a->pinned = true;
        if (a->join_token) LOG_INFO("already joined: the join token is not needed");
    } else if (a->join_token) {
        const char *secret;
        if (loom_join_token_parse(a->join_token, a->server_key, &secret, why, sizeof why) != 0) {
            LOG_ERROR("%s", why);
            return LOOM_EINVAL;
        }
        a->joining = true;
    } else if (!a->server_key[0]) {
        LOG_ERROR("no server key: give a join token (LOOM_JOIN_TOKEN or --join-token-file, from "
                  "`loom agents token` on the server), or --server-key KEY to be approved by "
                  "`loom agents approve`");
        return LOOM_EINVAL;
    } else if (!loom_curve_key_valid(a->server_key)) {
        LOG_ERROR("--server-key \"%s\" is not a 40-character Z85 key", a->server_key);
        return LOOM_EINVAL;
    }
    LOG_INFO("agent key=%s server_key=%s", a->curve_pub, a->server_key);
    return 0;
}

static void *open_socket(loom_agent_t *a)
{
    int one = 1, zero = 0, ivl = RECONNECT_IVL_MS, ivl_max = RECONNECT_IVL_MAX_MS;
    int64_t max_msg = LOOM_MSG_MAX;
    void *s = zmq_socket(a->zctx, ZMQ_DEALER);
    if (!s) return NULL;
    /* No routing id of our own: loomd's ROUTER gives each connection one,
     * and knows us by our CURVE key, not by a name we could claim. */
    if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, a->server_key, 40) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, a->curve_pub, 40) != 0 ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, a->curve_sec, 40) != 0 ||
        zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one) != 0 ||
        zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) != 0 ||
        zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) != 0 ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0 ||
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) != 0 || zmq_connect(s, a->server) != 0) {
        LOG_ERROR("cannot connect to %s: %s", a->server, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

static void init_handles(loom_agent_t *a)
{
    uv_timer_init(a->loop, &a->hello_timer);
    uv_timer_init(a->loop, &a->heartbeat_timer);
    uv_timer_init(a->loop, &a->retry_timer);
    uv_idle_init(a->loop, &a->inbox_idle);
    uv_timer_init(a->loop, &a->drain_timer);
    a->hello_timer.data = a;
    a->heartbeat_timer.data = a;
    a->retry_timer.data = a;
    a->inbox_idle.data = a;
    a->drain_timer.data = a;
    a->pending_closes += 5;
}

static void on_gpus_detected(loom_agent_t *a)
{
    on_hello_timer(&a->hello_timer);
}

static void on_slurm_capacity(void *ud, const slurm_capacity_t *c, const char *error);

/* Before the first Hello: an earlier run's jobs go, then the capacity. */
static void on_slurm_swept(void *ud, const char *error)
{
    loom_agent_t *a = ud;
    if (error) LOG_WARN("slurm: cancelling an earlier run's jobs agent=%s: %s", a->name, error);
    if (a->stopping || !a->slurm) return;
    slurm_exec_capacity(a->slurm, on_slurm_capacity, a);
}

/* A Slurm agent reports what its partition offers, not its login node. */
static void on_slurm_capacity(void *ud, const slurm_capacity_t *c, const char *error)
{
    loom_agent_t *a = ud;
    if (a->stopping) return;
    if (error) {
        LOG_WARN("slurm capacity unknown agent=%s: %s (reporting the login node's)", a->name,
                 error);
    } else {
        a->cpus_usable = c->cpus;
        a->memory_bytes = c->memory_bytes;
        if (!a->slots_given) a->slots = c->cpus ? c->cpus : 1;
        gpu_inv_free(&a->gpus);
        a->gpus.gpus = loom_xcalloc(c->n_gpus + 1, sizeof *a->gpus.gpus);
        for (size_t i = 0; i < c->n_gpus; i++) {
            a->gpus.gpus[i] = c->gpus[i];
            a->gpus.gpus[i].uuid = loom_xstrdup(c->gpus[i].uuid);
            a->gpus.gpus[i].model = loom_xstrdup(c->gpus[i].model);
        }
        a->gpus.n = c->n_gpus;
        a->gpus.source = "slurm";
        LOG_INFO("slurm capacity agent=%s nodes=%u cpus=%u memory_mb=%llu gpus=%zu slots=%u",
                 a->name, c->nodes, c->cpus, (unsigned long long)(c->memory_bytes >> 20), c->n_gpus,
                 a->slots);
    }
    a->detected = true;
    on_gpus_detected(a);
}

int loom_agent_start(loom_agent_t *a)
{
    int rc = check_config(a);
    if (rc == 0) rc = prepare_work_dir(a);
    if (rc == 0) rc = agent_task_user_start(a);
    if (rc == 0) rc = load_cache(a);
    if (rc == 0) rc = load_keys(a);
    if (rc != 0) return rc;
    host_init(a);
    if (!a->zctx) {
        a->zctx = zmq_ctx_new();
        a->own_zctx = true;
    }
    void *s = open_socket(a);
    if (!s) return LOOM_ENET;
    a->zs = loom_zsock_new(a->loop, s, on_socket_message, a);
    if (!a->zs) {
        zmq_close(s);
        return LOOM_ENET;
    }
    init_handles(a);
    a->fetcher = fetcher_new(a, a->cache_dir);
    a->pending_closes++;
    /* Two spawns at once keep two cores busy starting processes; more
     * threads would only wait for the same cores. */
    if (a->exec->local && loom_spawner_new(a->loop, 2, &a->spawner) == 0) a->pending_closes++;
    a->started = true;
    a->last_heard_ms = loom_clock_now(&a->clock);
    LOG_INFO("agent starting agent=%s server=%s slots=%u work_dir=%s", a->name, a->server, a->slots,
             a->work_dir);
    if (loom_zsock_start(a->zs) != 0) return LOOM_ENET;
    /* The first Hello waits for the GPUs: loomd places work by them. */
    if (a->slurm) {
        slurm_exec_start(a->slurm);
        slurm_exec_sweep(a->slurm, on_slurm_swept, a);
    } else {
        host_detect(a, on_gpus_detected);
    }
    return 0;
}

void agent_handle_closed(loom_agent_t *a)
{
    if (--a->pending_closes > 0 || !a->closing) return;
    LOG_INFO("agent stopped agent=%s", a->name);
    if (a->on_stopped) a->on_stopped(a->stopped_ud);
}

static void on_handle_closed(uv_handle_t *handle)
{
    loom_agent_t *a = handle->data;
    agent_handle_closed(a);
}

static void on_socket_closed(void *ud)
{
    loom_agent_t *a = ud;
    agent_handle_closed(a);
}

typedef struct {
    uv_work_t req;
    loom_agent_t *a;
    void (*work)(void *ud);
    void (*done)(void *ud);
    void *ud;
} job_t;

static void on_job_work(uv_work_t *req)
{
    job_t *j = req->data;
    if (j->work) j->work(j->ud);
}

static void on_job_done(uv_work_t *req, int status)
{
    job_t *j = req->data;
    loom_agent_t *a = j->a;
    (void)status; /* never cancelled: stopping waits for jobs instead */
    j->done(j->ud);
    free(j);
    a->jobs--;
    agent_maybe_close(a);
}

void agent_queue_job(loom_agent_t *a, void (*work)(void *ud), void (*done)(void *ud), void *ud)
{
    job_t *j = loom_xcalloc(1, sizeof *j);
    j->req.data = j;
    j->a = a;
    j->work = work;
    j->done = done;
    j->ud = ud;
    a->jobs++;
    if (uv_queue_work(a->loop, &j->req, on_job_work, on_job_done) != 0) abort();
}

void agent_maybe_close(loom_agent_t *a)
{
    /* Not started: no handle to close (a job, say a cache eviction queued
     * before the start failed, may still come back here). */
    if (!a->started || !a->stopping || a->closing || a->running > 0 || a->jobs > 0) return;
    a->closing = true;
    free_inbox(a);
    fetcher_close(a->fetcher, agent_handle_closed);
    uv_close((uv_handle_t *)&a->hello_timer, on_handle_closed);
    uv_close((uv_handle_t *)&a->heartbeat_timer, on_handle_closed);
    uv_close((uv_handle_t *)&a->retry_timer, on_handle_closed);
    uv_close((uv_handle_t *)&a->inbox_idle, on_handle_closed);
    uv_close((uv_handle_t *)&a->drain_timer, on_handle_closed);
    loom_zsock_t *zs = a->zs;
    a->zs = NULL;
    loom_zsock_close(zs, on_socket_closed);
    if (a->spawner) {
        /* No runner is left (running is 0), so no spawn is under way. */
        loom_spawner_t *sp = a->spawner;
        a->spawner = NULL;
        loom_spawner_close(sp, on_socket_closed, a);
    }
    if (a->slurm) {
        a->pending_closes++;
        slurm_exec_t *x = a->slurm;
        a->slurm = NULL;
        slurm_exec_close(x, on_socket_closed, a);
    }
}

/* Fires at the drain timeout, or right after the last held attempt went
 * (agent_check_drained): reporting from a timer keeps on_drained, which
 * will stop the agent, out of the middle of a message handler. */
static void on_drain_timer(uv_timer_t *handle)
{
    loom_agent_t *a = handle->data;
    if (a->stopping || a->drain_reported) return;
    a->drain_reported = true;
    bool timed_out = a->attempts != NULL;
    if (timed_out)
        LOG_WARN("drain timed out agent=%s running=%u held=%zu", a->name, a->running,
                 loom_agent_held(a));
    else
        LOG_INFO("drained agent=%s", a->name);
    if (a->on_drained) a->on_drained(a->drained_ud, timed_out);
}

void agent_check_drained(loom_agent_t *a)
{
    if (!a->draining || a->drain_reported || a->stopping || a->attempts) return;
    uv_timer_start(&a->drain_timer, on_drain_timer, 0, 0);
}

void loom_agent_drain(loom_agent_t *a, uint64_t timeout_ms,
                      void (*on_drained)(void *ud, bool timed_out), void *ud)
{
    if (!a->started || a->stopping || a->draining) return;
    a->draining = true;
    a->on_drained = on_drained;
    a->drained_ud = ud;
    LOG_INFO("draining agent=%s running=%u held=%zu timeout_ms=%llu", a->name, a->running,
             loom_agent_held(a), (unsigned long long)timeout_ms);
    /* loomd hears it now, before it can send another Dispatch our way. */
    if (a->welcomed) send_heartbeat(a);
    if (timeout_ms) uv_timer_start(&a->drain_timer, on_drain_timer, timeout_ms, 0);
    agent_check_drained(a);
}

bool loom_agent_draining(const loom_agent_t *a)
{
    return a->draining;
}

void loom_agent_stop(loom_agent_t *a, void (*on_stopped)(void *ud), void *ud)
{
    a->stopping = true;
    a->on_stopped = on_stopped;
    a->stopped_ud = ud;
    if (!a->started) {
        if (on_stopped) on_stopped(ud);
        return;
    }
    LOG_INFO("agent stopping agent=%s running=%u", a->name, a->running);
    uv_timer_stop(&a->hello_timer);
    uv_timer_stop(&a->drain_timer);
    agent_stop_attempts(a);
    fetcher_stop(a->fetcher);
    agent_maybe_close(a);
}

void loom_agent_destroy(loom_agent_t **ap)
{
    loom_agent_t *a = ap ? *ap : NULL;
    if (!a) return;
    agent_free_attempts(a);
    if (a->slurm) slurm_exec_close(a->slurm, NULL, NULL); /* never started */
    a->slurm = NULL;
    free_inbox(a);
    fetcher_destroy(&a->fetcher);
    cache_destroy(&a->cache);
    loom_map_free(&a->uploading);
    loom_map_free(&a->done);
    free(a->done_ring);
    if (a->own_zctx) zmq_ctx_term(a->zctx);
    for (size_t i = 0; i < a->n_labels; i++) free(a->labels[i]);
    free(a->labels);
    agent_task_user_free(a);
    free(a->name);
    free(a->server);
    free(a->work_dir);
    if (a->join_token) sodium_memzero(a->join_token, strlen(a->join_token));
    free(a->join_token);
    sodium_memzero(a->curve_sec, sizeof a->curve_sec);
    free(a->cache_dir);
    free(a->hostname);
    host_free(a);
    free(a);
    *ap = NULL;
}
