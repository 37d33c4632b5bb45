/* The wire codec: the only module that packs and unpacks protobuf messages.
 * Decoding validates the envelope (version, a known body kind, per-kind
 * field rules) so handlers can trust what they receive. */
#ifndef LOOM_CODEC_H
#define LOOM_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loom.pb-c.h"

#define LOOM_PROTO_VERSION 1
/* Largest envelope either side accepts (ZMQ_MAXMSGSIZE is set to this). */
#define LOOM_MSG_MAX (4 * 1024 * 1024)
/* Largest LogChunk payload an agent sends. */
#define LOOM_LOG_CHUNK_MAX (256 * 1024)
/* Largest ObjectChunk payload loomd sends. */
#define LOOM_OBJECT_CHUNK_MAX (1024 * 1024)
/* Most input or output files one attempt may have. */
#define LOOM_ARTIFACTS_MAX 10000
/* Largest metrics JSON a Finished may carry. */
/* A secret's value, and how many one task may list (so that a Dispatch with
 * all of them at their largest stays well under LOOM_MSG_MAX). */
#define LOOM_SECRET_VALUE_MAX (64 * 1024)
#define LOOM_SECRETS_MAX 32
#define LOOM_METRICS_MAX (64 * 1024)

typedef Loom__Envelope loom_msg_t;

/* Name of a body kind for logs ("hello", "log", ...). */
const char *loom_codec_kind_name(Loom__Envelope__BodyCase kind);
/* A path relative to a working folder and normalised: not empty, no
 * leading or trailing '/', no empty, "." or ".." segment. */
bool loom_codec_relpath_ok(const char *p);

/* Unpacks and validates one envelope. On failure returns LOOM_EPROTO with a
 * reason in why; nothing is allocated. Free a result with loom_codec_free. */
int loom_codec_decode(const void *data, size_t len, loom_msg_t **out, char *why, size_t whylen);
void loom_codec_free(loom_msg_t *msg);

/* Packs an envelope (its version is set here) into a new buffer the caller
 * frees. */
int loom_codec_encode(loom_msg_t *msg, uint8_t **out, size_t *len);

#endif
