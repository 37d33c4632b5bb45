/* Conditions (expr.h): a recursive-descent parser to a small tree, and an
 * evaluator over jansson values. The grammar has no loops or calls, the
 * source length and nesting are capped, so both parsing and evaluation are
 * linear in a bounded input. */
#include "loom/expr.h"
#include "loom/err.h"
#include "loom/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { N_OR, N_AND, N_NOT, N_CMP, N_LIT, N_REF } nkind;
typedef enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE } cmpop;

typedef struct node node;
struct node {
    nkind kind;
    cmpop op;
    node *a, *b;
    json_t *lit; /* N_LIT */
    char *path;  /* N_REF */
    int col;     /* N_REF: where the path starts */
};

struct loom_expr {
    node *root;
};

/* ---- lexer ---- */

typedef enum {
    T_END,
    T_LPAREN,
    T_RPAREN,
    T_CMP,
    T_NUM,
    T_STR,
    T_PATH,
    T_AND,
    T_OR,
    T_NOT,
    T_TRUE,
    T_FALSE,
    T_NULL,
} ttype;

typedef struct {
    ttype type;
    size_t start, end; /* bytes of the source */
    int col;
    cmpop op;
    char *text; /* T_STR: the decoded string */
} token;

typedef struct {
    const char *src;
    size_t len, pos;
    int col; /* column of src[pos] */
    token tok;
    int depth;
    char *why;
    size_t whylen;
    int err_col;
    bool failed;
} parser;

static void fail(parser *p, int col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(parser *p, int col, const char *fmt, ...)
{
    if (p->failed) return;
    p->failed = true;
    p->err_col = col;
    va_list ap;
    va_start(ap, fmt);
    if (p->whylen) vsnprintf(p->why, p->whylen, fmt, ap);
    va_end(ap);
}

static void advance(parser *p, size_t n)
{
    for (size_t i = 0; i < n && p->pos < p->len; i++, p->pos++)
        if (((unsigned char)p->src[p->pos] & 0xC0) != 0x80) p->col++;
}

static int peekc(const parser *p, size_t ahead)
{
    return p->pos + ahead < p->len ? (unsigned char)p->src[p->pos + ahead] : -1;
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_ident_start(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool is_ident_char(int c)
{
    return is_ident_start(c) || is_digit(c) || c == '-';
}

static void lex_number(parser *p)
{
    if (peekc(p, 0) == '-') advance(p, 1);
    while (is_digit(peekc(p, 0))) advance(p, 1);
    if (peekc(p, 0) == '.') {
        advance(p, 1);
        if (!is_digit(peekc(p, 0))) {
            fail(p, p->col, "expected a digit after \".\"");
            return;
        }
        while (is_digit(peekc(p, 0))) advance(p, 1);
    }
    if (peekc(p, 0) == 'e' || peekc(p, 0) == 'E') {
        advance(p, 1);
        if (peekc(p, 0) == '+' || peekc(p, 0) == '-') advance(p, 1);
        if (!is_digit(peekc(p, 0))) {
            fail(p, p->col, "expected a digit in the exponent");
            return;
        }
        while (is_digit(peekc(p, 0))) advance(p, 1);
    }
    if (is_ident_char(peekc(p, 0)) || peekc(p, 0) == '.') fail(p, p->tok.col, "invalid number");
    p->tok.type = T_NUM;
}

static void lex_string(parser *p)
{
    int quote = peekc(p, 0);
    loom_buf_t b = {0};
    advance(p, 1);
    for (;;) {
        int c = peekc(p, 0);
        if (c < 0) {
            loom_buf_free(&b);
            fail(p, p->tok.col, "unterminated string");
            return;
        }
        if (c == quote) break;
        if (c == '\\') {
            int e = peekc(p, 1);
            static const char from[] = "\\'\"ntr", to[] = "\\'\"\n\t\r";
            const char *hit = e > 0 ? strchr(from, e) : NULL;
            if (!hit) {
                loom_buf_free(&b);
                fail(p, p->col, "unknown escape in string; use \\\\, \\', \\\", \\n, \\t or \\r");
                return;
            }
            loom_buf_append(&b, &to[hit - from], 1);
            advance(p, 2);
            continue;
        }
        loom_buf_append(&b, &p->src[p->pos], 1);
        p->pos++; /* bytes of a character go one by one; count it once */
        if ((c & 0xC0) != 0x80) p->col++;
    }
    advance(p, 1);
    p->tok.type = T_STR;
    p->tok.text = loom_buf_steal(&b);
}

static void lex_path(parser *p)
{
    while (is_ident_char(peekc(p, 0))) advance(p, 1);
    while (peekc(p, 0) == '.') {
        advance(p, 1);
        int c = peekc(p, 0);
        if (!is_ident_start(c) && !is_digit(c)) {
            fail(p, p->col, "expected a name after \".\"");
            return;
        }
        while (is_ident_char(peekc(p, 0))) advance(p, 1);
    }
    static const struct {
        const char *word;
        ttype type;
    } words[] = {{"and", T_AND},   {"or", T_OR},       {"not", T_NOT},
                 {"true", T_TRUE}, {"false", T_FALSE}, {"null", T_NULL}};
    size_t n = p->pos - p->tok.start;
    p->tok.type = T_PATH;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i].word) == n && memcmp(words[i].word, p->src + p->tok.start, n) == 0)
            p->tok.type = words[i].type;
}

/* Operators, and the ones people bring from other languages. */
static bool lex_operator(parser *p, int c)
{
    int d = peekc(p, 1);
    static const struct {
        char a, b;
        cmpop op;
    } ops[] = {{'=', '=', OP_EQ}, {'!', '=', OP_NE}, {'<', '=', OP_LE},
               {'>', '=', OP_GE}, {'<', 0, OP_LT},   {'>', 0, OP_GT}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (ops[i].a != c || (ops[i].b && ops[i].b != d)) continue;
        advance(p, ops[i].b ? 2 : 1);
        p->tok.type = T_CMP;
        p->tok.op = ops[i].op;
        return true;
    }
    if (c == '=') fail(p, p->col, "\"=\" is not an operator; use \"==\"");
    if (c == '!') fail(p, p->col, "\"!\" is not an operator; use \"not\"");
    if (c == '&') fail(p, p->col, "\"&\" is not an operator; use \"and\"");
    if (c == '|') fail(p, p->col, "\"|\" is not an operator; use \"or\"");
    return p->failed;
}

static void lex(parser *p)
{
    free(p->tok.text);
    memset(&p->tok, 0, sizeof p->tok);
    for (int c; (c = peekc(p, 0)) == ' ' || c == '\t' || c == '\n' || c == '\r';) advance(p, 1);
    p->tok.start = p->pos;
    p->tok.col = p->col;
    int c = peekc(p, 0);
    if (c < 0) {
        p->tok.type = T_END;
    } else if (c == '(' || c == ')') {
        p->tok.type = c == '(' ? T_LPAREN : T_RPAREN;
        advance(p, 1);
    } else if (is_digit(c) || (c == '-' && is_digit(peekc(p, 1)))) {
        lex_number(p);
    } else if (c == '\'' || c == '"') {
        lex_string(p);
    } else if (is_ident_start(c)) {
        lex_path(p);
    } else if (!lex_operator(p, c)) {
        if (c >= 0x21 && c < 0x7F)
            fail(p, p->col, "unexpected \"%c\"", c);
        else
            fail(p, p->col, "unexpected character");
    }
    p->tok.end = p->pos;
}

/* The current token as the user wrote it, for "unexpected ..." messages:
 * cut short, and anything but printable ASCII shown as "?". */
static void tok_describe(const parser *p, char *out, size_t outlen)
{
    if (p->tok.type == T_END) {
        snprintf(out, outlen, "the end of the condition");
        return;
    }
    char text[48];
    size_t n = p->tok.end - p->tok.start, k = 0;
    for (size_t i = 0; i < n && k < 40; i++) {
        unsigned char c = (unsigned char)p->src[p->tok.start + i];
        text[k++] = c >= 0x20 && c < 0x7F ? (char)c : '?';
    }
    text[k] = '\0';
    snprintf(out, outlen, "\"%s%s\"", text, n > 40 ? "..." : "");
}

/* ---- parser ---- */

static void node_free(node *n)
{
    if (!n) return;
    node_free(n->a);
    node_free(n->b);
    json_decref(n->lit);
    free(n->path);
    free(n);
}

static node *node_new(nkind kind, node *a, node *b)
{
    node *n = loom_xcalloc(1, sizeof *n);
    n->kind = kind;
    n->a = a;
    n->b = b;
    return n;
}

static node *parse_or(parser *p);

static bool enter(parser *p)
{
    if (++p->depth <= LOOM_EXPR_MAX_DEPTH) return true;
    fail(p, p->tok.col, "nested deeper than %d levels", LOOM_EXPR_MAX_DEPTH);
    return false;
}

static node *literal(parser *p)
{
    node *n = node_new(N_LIT, NULL, NULL);
    const char *s = p->src + p->tok.start;
    size_t len = p->tok.end - p->tok.start;
    const char *bad = NULL;
    if (p->tok.type == T_STR) {
        n->lit = json_string(p->tok.text);
        bad = "string is not valid UTF-8";
    } else if (p->tok.type == T_NUM) {
        char buf[64];
        int64_t i;
        bad = "number is out of range";
        if (len < sizeof buf) {
            memcpy(buf, s, len);
            buf[len] = '\0';
            if (!memchr(buf, '.', len) && !strpbrk(buf, "eE") &&
                loom_parse_i64(buf, INT64_MIN, INT64_MAX, &i) == 0)
                n->lit = json_integer((json_int_t)i);
            else
                n->lit = json_real(strtod(buf, NULL)); /* NULL for 1e999: not finite */
        }
    } else {
        n->lit = p->tok.type == T_TRUE    ? json_true()
                 : p->tok.type == T_FALSE ? json_false()
                                          : json_null();
    }
    if (!n->lit) {
        fail(p, p->tok.col, "%s", bad);
        node_free(n);
        return NULL;
    }
    return n;
}

static node *parse_primary(parser *p)
{
    char got[64];
    switch (p->tok.type) {
    case T_LPAREN: {
        int col = p->tok.col;
        if (!enter(p)) return NULL;
        lex(p);
        node *n = parse_or(p);
        if (n && p->tok.type != T_RPAREN) {
            tok_describe(p, got, sizeof got);
            fail(p, p->tok.col, "expected \")\" to close the \"(\" at column %d, got %s", col, got);
        }
        p->depth--;
        if (p->failed) {
            node_free(n);
            return NULL;
        }
        lex(p);
        return n;
    }
    case T_PATH: {
        node *n = node_new(N_REF, NULL, NULL);
        n->path = loom_xstrndup(p->src + p->tok.start, p->tok.end - p->tok.start);
        n->col = p->tok.col;
        lex(p);
        return n;
    }
    case T_NUM:
    case T_STR:
    case T_TRUE:
    case T_FALSE:
    case T_NULL: {
        node *n = literal(p);
        if (n) lex(p);
        return n;
    }
    default:
        tok_describe(p, got, sizeof got);
        fail(p, p->tok.col, "expected a value, got %s", got);
        return NULL;
    }
}

static node *parse_cmp(parser *p)
{
    node *left = parse_primary(p);
    if (!left || p->tok.type != T_CMP) return left;
    node *n = node_new(N_CMP, left, NULL);
    n->op = p->tok.op;
    lex(p);
    n->b = p->failed ? NULL : parse_primary(p);
    if (n->b && p->tok.type == T_CMP)
        fail(p, p->tok.col, "comparisons cannot be chained; join them with \"and\"");
    if (p->failed) {
        node_free(n);
        return NULL;
    }
    return n;
}

static node *parse_not(parser *p)
{
    if (p->tok.type != T_NOT) return parse_cmp(p);
    if (!enter(p)) return NULL;
    lex(p);
    node *a = p->failed ? NULL : parse_not(p);
    p->depth--;
    return a ? node_new(N_NOT, a, NULL) : NULL;
}

/* and and or: a left-leaning chain, built by a loop rather than recursion. */
static node *parse_chain(parser *p, ttype op, nkind kind, node *(*operand)(parser *))
{
    node *left = operand(p);
    while (left && p->tok.type == op) {
        lex(p);
        node *right = p->failed ? NULL : operand(p);
        if (!right) {
            node_free(left);
            return NULL;
        }
        left = node_new(kind, left, right);
    }
    return left;
}

static node *parse_and(parser *p)
{
    return parse_chain(p, T_AND, N_AND, parse_not);
}

static node *parse_or(parser *p)
{
    return parse_chain(p, T_OR, N_OR, parse_and);
}

int loom_expr_parse(const char *src, loom_expr_t **out, char *why, size_t whylen, int *col)
{
    *out = NULL;
    parser p = {.src = src, .len = strlen(src), .col = 1, .why = why, .whylen = whylen};
    if (whylen) why[0] = '\0';
    node *root = NULL;
    if (p.len > LOOM_EXPR_MAX_LEN) {
        fail(&p, 1, "condition is %zu bytes; the limit is %d", p.len, LOOM_EXPR_MAX_LEN);
    } else {
        lex(&p);
        if (!p.failed && p.tok.type == T_END) fail(&p, 1, "condition is empty");
        root = p.failed ? NULL : parse_or(&p);
        if (root && p.tok.type != T_END) {
            char got[64];
            tok_describe(&p, got, sizeof got);
            fail(&p, p.tok.col, "unexpected %s after the condition", got);
        }
    }
    free(p.tok.text);
    if (p.failed) {
        node_free(root);
        if (col) *col = p.err_col;
        return LOOM_EPARSE;
    }
    *out = loom_xcalloc(1, sizeof **out);
    (*out)->root = root;
    if (col) *col = 0;
    return 0;
}

void loom_expr_destroy(loom_expr_t **e)
{
    if (!e || !*e) return;
    node_free((*e)->root);
    free(*e);
    *e = NULL;
}

/* ---- references ---- */

typedef struct {
    int (*plain)(void *ud, const char *path);
    int (*at)(void *ud, const char *path, int col);
    void *ud;
} ref_walk;

static int walk_refs(const node *n, const ref_walk *w)
{
    if (!n) return 0;
    if (n->kind == N_REF) return w->at ? w->at(w->ud, n->path, n->col) : w->plain(w->ud, n->path);
    int rc = walk_refs(n->a, w);
    return rc ? rc : walk_refs(n->b, w);
}

int loom_expr_each_ref(const loom_expr_t *e, int (*cb)(void *ud, const char *path), void *ud)
{
    ref_walk w = {.plain = cb, .ud = ud};
    return e ? walk_refs(e->root, &w) : 0;
}

int loom_expr_each_ref_at(const loom_expr_t *e, int (*cb)(void *ud, const char *path, int col),
                          void *ud)
{
    ref_walk w = {.at = cb, .ud = ud};
    return e ? walk_refs(e->root, &w) : 0;
}

/* ---- evaluation ---- */

typedef struct {
    char *path, *text;
} seen_t;

typedef struct {
    json_t *(*lookup)(void *ud, const char *path);
    void *ud;
    bool record;
    seen_t *seen;
    size_t n_seen;
} ectx;

static bool truthy(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_FALSE:
    case JSON_NULL:
        return false;
    case JSON_INTEGER:
        return json_integer_value(v) != 0;
    case JSON_REAL:
        return json_real_value(v) != 0.0;
    case JSON_STRING:
        return json_string_length(v) > 0;
    case JSON_ARRAY:
        return json_array_size(v) > 0;
    case JSON_OBJECT:
        return json_object_size(v) > 0;
    default:
        return true;
    }
}

/* <0, 0, >0 as a compares to b, for values of the same ordered kind. */
static int order(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    if (json_is_number(a)) {
        double x = json_number_value(a), y = json_number_value(b);
        return (x > y) - (x < y);
    }
    size_t la = json_string_length(a), lb = json_string_length(b);
    int r = memcmp(json_string_value(a), json_string_value(b), la < lb ? la : lb);
    return r ? r : (la > lb) - (la < lb);
}

static bool compare(const json_t *a, const json_t *b, cmpop op)
{
    bool numbers = json_is_number(a) && json_is_number(b);
    bool strings = json_is_string(a) && json_is_string(b);
    if (numbers || strings) {
        int r = order(a, b);
        switch (op) {
        case OP_EQ:
            return r == 0;
        case OP_NE:
            return r != 0;
        case OP_LT:
            return r < 0;
        case OP_LE:
            return r <= 0;
        case OP_GT:
            return r > 0;
        default:
            return r >= 0;
        }
    }
    /* Booleans, null, lists and objects only compare for equality; values
     * of different kinds are never equal. */
    bool same_kind = json_typeof(a) == json_typeof(b) || (json_is_boolean(a) && json_is_boolean(b));
    if (op == OP_EQ) return same_kind && json_equal((json_t *)a, (json_t *)b);
    if (op == OP_NE) return !(same_kind && json_equal((json_t *)a, (json_t *)b));
    return false;
}

static json_t *lookup(ectx *x, const node *n)
{
    json_t *v = x->lookup ? x->lookup(x->ud, n->path) : NULL;
    if (!v) v = json_null();
    if (x->record) {
        x->seen = loom_xrealloc(x->seen, (x->n_seen + 1) * sizeof *x->seen);
        x->seen[x->n_seen].path = loom_xstrdup(n->path);
        x->seen[x->n_seen++].text = loom_expr_value_text(v, true);
    }
    return v;
}

static bool truth(const node *n, ectx *x);

/* A new reference to the value of n. */
static json_t *value_of(const node *n, ectx *x)
{
    if (n->kind == N_LIT) return json_incref(n->lit);
    if (n->kind == N_REF) return lookup(x, n);
    return json_boolean(truth(n, x));
}

static bool truth(const node *n, ectx *x)
{
    switch (n->kind) {
    case N_OR:
        return truth(n->a, x) || truth(n->b, x);
    case N_AND:
        return truth(n->a, x) && truth(n->b, x);
    case N_NOT:
        return !truth(n->a, x);
    case N_CMP: {
        json_t *a = value_of(n->a, x), *b = value_of(n->b, x);
        bool r = compare(a, b, n->op);
        json_decref(a);
        json_decref(b);
        return r;
    }
    default: {
        json_t *v = value_of(n, x);
        bool r = truthy(v);
        json_decref(v);
        return r;
    }
    }
}

static int cmp_seen(const void *a, const void *b)
{
    return strcmp(((const seen_t *)a)->path, ((const seen_t *)b)->path);
}

static char *seen_text(ectx *x)
{
    if (x->n_seen > 1) qsort(x->seen, x->n_seen, sizeof *x->seen, cmp_seen);
    loom_buf_t b = {0};
    for (size_t i = 0; i < x->n_seen; i++)
        if (i == 0 || strcmp(x->seen[i].path, x->seen[i - 1].path) != 0)
            loom_buf_printf(&b, "%s%s=%s", b.len ? ", " : "", x->seen[i].path, x->seen[i].text);
    for (size_t i = 0; i < x->n_seen; i++) {
        free(x->seen[i].path);
        free(x->seen[i].text);
    }
    free(x->seen);
    return loom_buf_steal(&b);
}

bool loom_expr_eval(const loom_expr_t *e, json_t *(*lookup_fn)(void *ud, const char *path),
                    void *ud, char **seen)
{
    ectx x = {.lookup = lookup_fn, .ud = ud, .record = seen != NULL};
    bool r = e && e->root ? truth(e->root, &x) : false;
    if (seen) *seen = seen_text(&x);
    return r;
}

/* ---- values as text ---- */

/* The fewest digits that read back as d (0.1, not the 17 digits that show
 * binary floating point), written as Python's repr writes a float: plain
 * for exponents -4..15 (1000.0, 0.0001), else with one (1e+20, 1e-05). */
static void real_text(double d, char *out, size_t outlen)
{
    char sci[40];
    int digits = 1;
    for (; digits <= 17; digits++) {
        snprintf(sci, sizeof sci, "%.*e", digits - 1, d);
        if (strtod(sci, NULL) == d) break;
    }
    const char *e = strchr(sci, 'e');
    long exp = e ? strtol(e + 1, NULL, 10) : 0;
    if (exp >= -4 && exp < 16)
        snprintf(out, outlen, "%.*f", digits - 1 - exp > 0 ? (int)(digits - 1 - exp) : 0, d);
    else
        snprintf(out, outlen, "%s", sci);
    if (!strpbrk(out, ".eE")) {
        size_t n = strlen(out);
        snprintf(out + n, outlen - n, ".0");
    }
}

static void json_str(loom_buf_t *b, const char *s, size_t len)
{
    loom_buf_puts(b, "\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = c == '"'    ? "\\\""
                          : c == '\\' ? "\\\\"
                          : c == '\n' ? "\\n"
                          : c == '\r' ? "\\r"
                          : c == '\t' ? "\\t"
                                      : NULL;
        if (esc)
            loom_buf_puts(b, esc);
        else if (c < 0x20)
            loom_buf_printf(b, "\\u%04x", c);
        else
            loom_buf_append(b, &s[i], 1);
    }
    loom_buf_puts(b, "\"");
}

/* Nesting beyond this prints as null: values come from metrics files and
 * events, which nobody should be able to turn into deep recursion. */
#define TEXT_MAX_DEPTH 64

static void value_append(loom_buf_t *b, const json_t *v, bool quote, int depth)
{
    char num[40];
    size_t i;
    const char *key;
    json_t *item;
    if ((json_is_array(v) || json_is_object(v)) && depth >= TEXT_MAX_DEPTH) {
        loom_buf_puts(b, "null");
        return;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        if (quote)
            json_str(b, json_string_value(v), json_string_length(v));
        else
            loom_buf_append(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        loom_buf_printf(b, "%lld", (long long)json_integer_value(v));
        break;
    case JSON_REAL:
        real_text(json_real_value(v), num, sizeof num);
        loom_buf_puts(b, num);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        loom_buf_puts(b, json_is_true(v) ? "true" : "false");
        break;
    case JSON_ARRAY:
        loom_buf_puts(b, "[");
        json_array_foreach(v, i, item)
        {
            if (i) loom_buf_puts(b, ",");
            value_append(b, item, true, depth + 1);
        }
        loom_buf_puts(b, "]");
        break;
    case JSON_OBJECT:
        loom_buf_puts(b, "{");
        i = 0;
        json_object_foreach((json_t *)v, key, item)
        {
            if (i++) loom_buf_puts(b, ",");
            json_str(b, key, strlen(key));
            loom_buf_puts(b, ":");
            value_append(b, item, true, depth + 1);
        }
        loom_buf_puts(b, "}");
        break;
    default:
        loom_buf_puts(b, "null");
    }
}

char *loom_expr_value_text(const json_t *v, bool quote_strings)
{
    loom_buf_t b = {0};
    if (v)
        value_append(&b, v, quote_strings, 0);
    else
        loom_buf_puts(&b, "null");
    return loom_buf_steal(&b);
}
