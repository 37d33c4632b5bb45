/* A small YAML node tree, built from libyaml's event stream rather than its
 * document loader so that every node keeps its position and the input stays
 * bounded: anchors and aliases are refused (no "billion laughs"), as are deep
 * nesting, huge node counts, several documents, non-string keys and NUL bytes.
 * Duplicate keys are reported and the later copy dropped, so a mapping's keys
 * are always unique. Used by the DAG parser; meant for any loom YAML file. */
#ifndef LOOM_YTREE_H
#define LOOM_YTREE_H

#include "loom/dag.h" /* loom_diags_t */

#include <stdbool.h>
#include <stddef.h>

#define LOOM_YTREE_MAX_NODES 1000000
/* Room for what loom_yquote and loom_ynode_describe write. */
#define LOOM_YQUOTE_MAX 80

typedef enum {
    LOOM_YSCALAR,
    LOOM_YSEQ,
    LOOM_YMAP,
} loom_ykind;

/* How a scalar was written: positions inside its text depend on it. */
typedef enum {
    LOOM_YPLAIN,
    LOOM_YSINGLE,  /* 'quoted' */
    LOOM_YDOUBLE,  /* "quoted" */
    LOOM_YLITERAL, /* | block */
    LOOM_YFOLDED,  /* > block */
} loom_ystyle;

typedef struct loom_ynode loom_ynode_t;

typedef struct {
    loom_ynode_t *key; /* always a scalar */
    loom_ynode_t *value;
} loom_ypair_t;

struct loom_ynode {
    loom_ykind kind;
    int line, col; /* 1-based, where the node starts */
    char *tag;     /* explicit tag as libyaml resolved it ("tag:yaml.org,2002:str"), or NULL */
    /* LOOM_YSCALAR: the text, NUL-terminated and free of inner NULs. */
    char *str;
    size_t len;
    bool plain; /* unquoted, so YAML would give it a type (null, number, bool) */
    loom_ystyle style;
    int indent; /* LOOM_YLITERAL, LOOM_YFOLDED: column (0-based) where the text's lines start */
    /* LOOM_YSEQ */
    loom_ynode_t **items;
    size_t n_items;
    /* LOOM_YMAP, in file order */
    loom_ypair_t *pairs;
    size_t n_pairs;
    size_t cap; /* private: room in items or pairs */
};

typedef struct {
    size_t max_bytes; /* input size */
    size_t max_nodes; /* scalars, sequences and mappings, keys included */
    int max_depth;    /* nested sequences and mappings; the root one is depth 1 */
} loom_ytree_limits_t;

/* Reads one YAML document from src (len bytes, need not be NUL-terminated).
 * lim may be NULL: LOOM_DAG_MAX_BYTES, LOOM_YTREE_MAX_NODES, LOOM_DAG_MAX_DEPTH.
 * Every problem goes to diags, positioned in filename.
 *
 * Returns 0 with *root set (NULL for a file with no document at all), or
 * LOOM_EPARSE. After a fatal problem (syntax, limits, aliases...) *root is
 * NULL; after only duplicate keys *root is still the tree, minus the
 * duplicates, so a caller can keep validating and report everything at once.
 * The caller destroys *root whenever it is set. */
int loom_ytree_parse(const char *src, size_t len, const char *filename,
                     const loom_ytree_limits_t *lim, loom_ynode_t **root, loom_diags_t *diags);
void loom_ytree_destroy(loom_ynode_t **root);

/* The value stored under key in a mapping, or NULL (also when map is not one). */
const loom_ynode_t *loom_ynode_get(const loom_ynode_t *map, const char *key);
/* A plain, untagged "", "~", "null", "Null" or "NULL": YAML's null. */
bool loom_ynode_is_null(const loom_ynode_t *n);
/* For messages that say what was found instead: a quoted, escaped and
 * shortened scalar ("\"lots\""), "an empty value", "a list", "a mapping",
 * "an empty list" or "an empty mapping"
 * (LOOM_YQUOTE_MAX bytes suffice). */
void loom_ynode_describe(const loom_ynode_t *n, char *out, size_t outlen);
/* Where a byte of a scalar's text is written in the file, for a message that
 * points inside a string: exact in plain and quoted one-line scalars and in
 * literal blocks, approximate after escapes and in folded text. A cursor
 * remembers how far it walked, so asking for offsets in increasing order
 * costs one pass over the text however many are asked. */
typedef struct {
    size_t off; /* byte offset in n->str reached so far */
    int line, col;
} loom_ycursor_t;

/* Starts a cursor at the first byte of scalar n's text. */
void loom_ycursor_init(loom_ycursor_t *cur, const loom_ynode_t *n);
/* Moves cur to byte off of n->str (off <= n->len); backwards restarts. */
void loom_ycursor_seek(loom_ycursor_t *cur, const loom_ynode_t *n, size_t off);

/* Writes s as a double-quoted string safe to print: control bytes escaped,
 * cut to about 60 bytes with "...". LOOM_YQUOTE_MAX bytes always suffice. */
void loom_yquote(const char *s, size_t len, char *out, size_t outlen);

#endif
