/* loom-bench-floor: what this machine can do at all, measured in the same run
 * as loom and its peers, so every figure can be shown as a fraction of it.
 *   spawn: posix_spawn + waitpid of /bin/true, one at a time and two at a time;
 *   zmq:   a ZeroMQ REQ/REP round trip over TCP on 127.0.0.1;
 *   sqlite: a WAL commit (synchronous=NORMAL, as loomd runs) of one row, and
 *           of a batch of rows.
 * Prints one JSON object on stdout. */
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

extern char **environ;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static pid_t spawn_true(void)
{
    static char *const argv[] = {"true", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ);
    if (rc != 0) {
        fprintf(stderr, "loom-bench-floor: posix_spawn /bin/true: %s\n", strerror(rc));
        exit(1);
    }
    return pid;
}

/* n processes of /bin/true, at most `width` alive at once: processes/s. */
static double spawn_rate(int n, int width)
{
    double t0 = now_s();
    int started = 0, running = 0;
    while (started < n || running > 0) {
        while (running < width && started < n) {
            spawn_true();
            started++;
            running++;
        }
        int status;
        if (waitpid(-1, &status, 0) < 0) {
            perror("loom-bench-floor: waitpid");
            exit(1);
        }
        running--;
    }
    return n / (now_s() - t0);
}

static void *echo_main(void *sock)
{
    char buf[64];
    for (;;) {
        int n = zmq_recv(sock, buf, sizeof buf, 0);
        if (n < 0) break; /* the context was terminated */
        if (zmq_send(sock, buf, (size_t)n, 0) < 0) break;
    }
    zmq_close(sock);
    return NULL;
}

/* Median round trip of a 16-byte message, in microseconds. */
static double zmq_rtt_us(int n)
{
    void *ctx = zmq_ctx_new();
    void *rep = zmq_socket(ctx, ZMQ_REP), *req = zmq_socket(ctx, ZMQ_REQ);
    char ep[128];
    size_t eplen = sizeof ep;
    int linger = 0;
    zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(rep, "tcp://127.0.0.1:*") != 0 ||
        zmq_getsockopt(rep, ZMQ_LAST_ENDPOINT, ep, &eplen) != 0 || zmq_connect(req, ep) != 0) {
        fprintf(stderr, "loom-bench-floor: zmq: %s\n", zmq_strerror(zmq_errno()));
        exit(1);
    }
    pthread_t th;
    pthread_create(&th, NULL, echo_main, rep);
    double *rtt = calloc((size_t)n, sizeof *rtt);
    char msg[16] = "0123456789abcde", back[16];
    for (int i = 0; i < n + 100; i++) { /* the first 100 warm up */
        double t0 = now_s();
        if (zmq_send(req, msg, sizeof msg, 0) < 0 || zmq_recv(req, back, sizeof back, 0) < 0) {
            fprintf(stderr, "loom-bench-floor: zmq: %s\n", zmq_strerror(zmq_errno()));
            exit(1);
        }
        if (i >= 100) rtt[i - 100] = (now_s() - t0) * 1e6;
    }
    zmq_close(req);
    zmq_ctx_term(ctx); /* wakes the echo thread with ETERM */
    pthread_join(th, NULL);
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_double);
    double med = rtt[n / 2];
    free(rtt);
    return med;
}

static void sql(sqlite3 *db, const char *s)
{
    char *err = NULL;
    if (sqlite3_exec(db, s, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "loom-bench-floor: sqlite: %s: %s\n", s, err ? err : "?");
        exit(1);
    }
}

/* Commits per second, each of `batch` rows, in WAL mode with synchronous=NORMAL. */
static double sqlite_commits(const char *dir, int commits, int batch)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/floor-%d.db", dir, batch);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        fprintf(stderr, "loom-bench-floor: cannot open %s\n", path);
        exit(1);
    }
    sql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, state TEXT, at INTEGER)");
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(db, "INSERT INTO t(state, at) VALUES ('finished', ?)", -1, &ins, NULL);
    double t0 = now_s();
    for (int c = 0; c < commits; c++) {
        sql(db, "BEGIN");
        for (int r = 0; r < batch; r++) {
            sqlite3_bind_int64(ins, 1, c * batch + r);
            if (sqlite3_step(ins) != SQLITE_DONE) {
                fprintf(stderr, "loom-bench-floor: insert: %s\n", sqlite3_errmsg(db));
                exit(1);
            }
            sqlite3_reset(ins);
        }
        sql(db, "COMMIT");
    }
    double rate = commits / (now_s() - t0);
    sqlite3_finalize(ins);
    sqlite3_close(db);
    char side[4200];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    return rate;
}

int main(int argc, char **argv)
{
    char *end = NULL;
    long n = argc > 1 ? strtol(argv[1], &end, 10) : 2000;
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    if ((end && *end) || n < 10 || n > 1000000) {
        fprintf(stderr, "usage: loom-bench-floor [N, 10..1000000] [DIR]\n");
        return 2;
    }
    double seq = spawn_rate((int)n, 1), two = spawn_rate((int)n, 2);
    double rtt = zmq_rtt_us((int)n * 5);
    double one = sqlite_commits(dir, (int)n / 2, 1),
           batched = sqlite_commits(dir, (int)n / 10, 100);
    printf("{\"spawn_seq_per_s\": %.1f, \"spawn_two_per_s\": %.1f, \"zmq_rtt_us\": %.1f, "
           "\"sqlite_commit_per_s\": %.1f, \"sqlite_batch100_commit_per_s\": %.1f, "
           "\"sqlite_batch100_rows_per_s\": %.1f}\n",
           seq, two, rtt, one, batched, batched * 100);
    return 0;
}
