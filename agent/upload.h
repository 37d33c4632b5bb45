/* An attempt's outputs, once its process has exited 0: the patterns of
 * Dispatch.outputs expanded into files, each file hashed (BLAKE2b-256,
 * streamed on the thread pool), each distinct content uploaded to loomd
 * unless loomd has it already, and then the list of artifacts for Finished.
 *
 * Upload, per object (PutObject / PutAck in proto/loom.proto): a query
 * (offset 0, no data, the size) that loomd answers with stored (nothing to
 * send: a duplicate costs no byte) or the offset to go on from; then chunks
 * of PUT_CHUNK bytes, read on the thread pool, each answered with the new
 * offset, the last with stored once loomd has verified the hash. At most
 * PUT_WINDOW bytes of the attempt are read or sent and not acknowledged, so
 * neither side holds more of a file than that. After a new Welcome (loomd
 * restarted, or the connection was lost) every unfinished object starts
 * again from the query: loomd says how much it still holds. */
#ifndef LOOM_AGENT_UPLOAD_H
#define LOOM_AGENT_UPLOAD_H

#include "agent_int.h"

/* A chunk is a quarter of the window, so acknowledgements keep the pipe
 * full (a chunk as large as the window would be stop-and-wait). 512 KiB
 * measured best here (1 GiB, 127.0.0.1, 2 cores; upload phase alone):
 * 256 KiB ~1.2 GB/s, 512 KiB ~1.8 GB/s, 1 MiB ~1.8 GB/s with twice the
 * memory: each chunk costs a thread-pool hop, two copies (encoding, ZeroMQ)
 * and an acknowledgement, which larger chunks spread over more bytes. So
 * the window is 2 MiB per attempt, on either side. */
#define PUT_CHUNK (512 * 1024)
#define PUT_WINDOW (4 * PUT_CHUNK)
/* Objects of one attempt in flight at once: queries of small files overlap
 * their round trips; data still shares one window. */
#define PUT_ACTIVE 4
/* Files of one attempt hashed at once, and the bytes one hashing job takes
 * before it yields its thread (a 10 GiB file must not hold one of the
 * thread pool's four threads for a quarter of a minute). */
#define HASH_JOBS 2
#define HASH_SLICE (64ull << 20)
/* An object waiting this long for loomd's answer while welcomed is asked
 * for again from the query (loomd may have lost what it had). Long, since
 * loomd verifies and syncs a large object before it answers "stored"; a
 * loomd that is gone is noticed sooner, by the heartbeats. */
#define PUT_STALL_MS 60000

typedef struct upload upload_t;

/* error NULL: every output is stored by loomd and listed in arts (borrowed
 * for the call); else why the outputs could not be collected or uploaded. */
typedef void (*upload_done_cb)(attempt_t *t, Loom__Artifact **arts, size_t n, const char *error);

/* Collects, hashes and uploads the outputs of t (whose folder is t->dir);
 * done is called once, later, from the loop. */
upload_t *upload_start(loom_agent_t *a, attempt_t *t, char *const *patterns, size_t n,
                       upload_done_cb done);
void upload_on_ack(upload_t *u, const Loom__PutAck *ack);
/* Sends what could not be sent before. Returns false when a send failed. */
bool upload_flush(upload_t *u);
/* After a Welcome: what was sent may be lost; ask again (sent by flush). */
void upload_restart(upload_t *u);
/* Starts the objects that can go (another attempt may have let go of one). */
void upload_pump(upload_t *u);
/* From the heartbeat: asks again for objects loomd has not answered for
 * PUT_STALL_MS. */
void upload_tick(upload_t *u, uint64_t now_ms);
/* The attempt lets go (cancelled, forgotten, agent stopping): done is not
 * called; the upload stops its jobs and frees itself once they are back. */
void upload_detach(upload_t *u);
/* Data bytes sent so far (for logs and tests). */
uint64_t upload_bytes_sent(const upload_t *u);

#endif
