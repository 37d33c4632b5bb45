/* Slurm client commands as asynchronous children (see slurm_cmd.h). libuv's
 * uv_spawn reaps only its own children by pid, so it does not disturb the
 * task runner's pidfd-based reaping. */
#include "slurm_cmd.h"

#include "loom/log.h"
#include "loom/util.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uv_process_t proc;
    uv_pipe_t out, err;
    uv_timer_t timer;
    loom_buf_t out_buf, err_buf;
    bool too_long, timed_out, exited;
    int64_t status;
    int term_signal;
    int open; /* handles not yet closed */
    int eofs; /* pipes at EOF */
    slurm_cmd_cb cb;
    void *ud;
    char *name;
} cmd_t;

static void finish(cmd_t *c);

static void on_closed(uv_handle_t *h)
{
    cmd_t *c = h->data;
    if (--c->open > 0) return;
    slurm_cmd_result_t res = {0};
    loom_buf_puts(&c->out_buf, "");
    loom_buf_puts(&c->err_buf, "");
    res.exit_status = c->exited && !c->term_signal ? (int)c->status : -1;
    res.timed_out = c->timed_out;
    res.ok = c->exited && !c->term_signal && c->status == 0 && !c->timed_out && !c->too_long;
    res.out = c->out_buf.data;
    res.out_len = c->out_buf.len;
    res.err = c->err_buf.data;
    if (c->too_long && c->err_buf.len == 0) res.err = "output too long";
    c->cb(c->ud, &res);
    loom_buf_free(&c->out_buf);
    loom_buf_free(&c->err_buf);
    free(c->name);
    free(c);
}

static void close_all(cmd_t *c)
{
    uv_close((uv_handle_t *)&c->timer, on_closed);
    if (!uv_is_closing((uv_handle_t *)&c->out)) uv_close((uv_handle_t *)&c->out, on_closed);
    if (!uv_is_closing((uv_handle_t *)&c->err)) uv_close((uv_handle_t *)&c->err, on_closed);
    uv_close((uv_handle_t *)&c->proc, on_closed);
}

/* Done once the process has exited and both pipes reached EOF. */
static void finish(cmd_t *c)
{
    if (c->exited && c->eofs == 2) close_all(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = loom_xmalloc(suggested);
    buf->len = suggested;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    cmd_t *c = s->data;
    loom_buf_t *b = s == (uv_stream_t *)&c->out ? &c->out_buf : &c->err_buf;
    if (n > 0) {
        if (b->len + (size_t)n > SLURM_CMD_OUT_MAX)
            c->too_long = true;
        else
            loom_buf_append(b, buf->base, (size_t)n);
    }
    free(buf->base);
    if (n < 0) {
        uv_read_stop(s);
        c->eofs++;
        finish(c);
    }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal)
{
    cmd_t *c = p->data;
    c->exited = true;
    c->status = status;
    c->term_signal = term_signal;
    uv_timer_stop(&c->timer);
    finish(c);
}

static void on_deadline(uv_timer_t *t)
{
    cmd_t *c = t->data;
    c->timed_out = true;
    LOG_WARN("slurm command timed out, killing it: %s", c->name);
    uv_process_kill(&c->proc, SIGKILL);
}

void slurm_cmd_run(uv_loop_t *loop, const char *const *argv, uint64_t deadline_ms, slurm_cmd_cb cb,
                   void *ud)
{
    cmd_t *c = loom_xcalloc(1, sizeof *c);
    c->cb = cb;
    c->ud = ud;
    c->name = loom_xstrdup(argv[0]);
    uv_pipe_init(loop, &c->out, 0);
    uv_pipe_init(loop, &c->err, 0);
    uv_timer_init(loop, &c->timer);
    c->out.data = c->err.data = c->timer.data = c->proc.data = c;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->err},
    };
    uv_process_options_t opt = {
        .exit_cb = on_exit_cb,
        .file = argv[0],
        .args = (char **)argv,
        .stdio_count = 3,
        .stdio = stdio,
    };
    int rc = uv_spawn(loop, &c->proc, &opt);
    if (rc != 0) {
        /* uv_spawn initialised the handle: it is closed like the others. */
        loom_buf_printf(&c->err_buf, "cannot run %s: %s", argv[0], uv_strerror(rc));
        c->exited = true;
        c->status = -1;
        c->open = 4;
        close_all(c);
        return;
    }
    c->open = 4;
    uv_read_start((uv_stream_t *)&c->out, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&c->err, on_alloc, on_read);
    uv_timer_start(&c->timer, on_deadline, deadline_ms, 0);
}
