/* Templates (dag.h): `run` text split into literal parts and ${{ REF }}
 * references, and rendering with each value quoted for the place it sits.
 *
 * In a shell command a value is only safe where the quoting loom adds is the
 * quoting the shell sees. So the shell form is scanned with a small /bin/sh
 * lexer that follows quotes, $( ), ${ }, backquotes, $(( )), comments and
 * here-documents: a reference outside quotes gets '...', one inside '...' or
 * "..." gets that context's escapes, and one in a comment, a here-document,
 * backquotes or $(( )) is refused, because a newline, a delimiter line, a
 * backquote or a non-number in the value would escape there. The lexer need
 * not understand all of sh: it only has to know which quotes are open. */
#include "loom/dag.h"
#include "loom/err.h"
#include "loom/util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the parts ---- */

static void add_part(loom_tmpl_t *t, const char *s, size_t n, bool is_ref, size_t off, int quote)
{
    if (!is_ref && n == 0) return;
    /* Room doubles whenever the count reaches a power of two: linear in all
     * for a text of 100,000 references. */
    if ((t->n_parts & (t->n_parts - 1)) == 0)
        t->parts = loom_xrealloc(t->parts, (t->n_parts ? t->n_parts * 2 : 1) * sizeof *t->parts);
    loom_tmpl_part_t *p = &t->parts[t->n_parts++];
    p->text = loom_xstrndup(s, n);
    p->is_ref = is_ref;
    p->off = off;
    p->quote = quote;
}

void loom_tmpl_free(loom_tmpl_t *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n_parts; i++) free(t->parts[i].text);
    free(t->parts);
    t->parts = NULL;
    t->n_parts = 0;
}

static bool is_seg_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

typedef struct {
    const char *text;
    size_t len;
    size_t last_close; /* offset of the last "}}" in text, or SIZE_MAX */
    char *why;
    size_t whylen;
    size_t err_off;
    bool failed;
} scan;

static bool fail_at(scan *s, size_t off, const char *msg)
{
    if (!s->failed) {
        s->failed = true;
        s->err_off = off;
        snprintf(s->why, s->whylen, "%s", msg);
    }
    return false;
}

/* Reads the reference whose "${{" is at off: the path in [*p0, *p1), the
 * text after the closing "}}" at *end. */
static bool read_ref(scan *s, size_t off, size_t *p0, size_t *p1, size_t *end)
{
    const char *t = s->text;
    size_t i = off + 3;
    if (s->last_close == SIZE_MAX || s->last_close < i)
        return fail_at(s, off, "unterminated \"${{\": no \"}}\" after it");
    while (i < s->len && is_space(t[i])) i++;
    *p0 = i;
    /* The first name starts with a letter or "_"; later ones may be task
     * names, which can start with a digit. */
    bool ok = i < s->len && is_seg_char(t[i]) && t[i] != '-' && !(t[i] >= '0' && t[i] <= '9');
    while (ok && i < s->len && is_seg_char(t[i])) {
        i++;
        if (i < s->len && t[i] == '.') {
            i++;
            ok = i < s->len && is_seg_char(t[i]);
        }
    }
    *p1 = i;
    while (i < s->len && is_space(t[i])) i++;
    if (*p0 == *p1 && i + 1 < s->len && t[i] == '}' && t[i + 1] == '}')
        return fail_at(s, off, "empty reference \"${{ }}\"");
    if (!ok || i + 1 >= s->len || t[i] != '}' || t[i + 1] != '}')
        return fail_at(s, off,
                       "invalid reference in \"${{ }}\": expected a path such as params.NAME");
    *end = i + 2;
    return true;
}

/* ---- a /bin/sh lexer that knows which quotes are open ---- */

#define SH_MAX_DEPTH 64
#define SH_MAX_HEREDOCS 8
#define SH_MAX_DELIM 64

typedef enum { F_TOP, F_CMDSUB, F_BACKQ, F_DQ, F_SQ, F_BRACE, F_ARITH, F_COMMENT } frame;

typedef struct {
    unsigned char kind[SH_MAX_DEPTH];
    unsigned char in_dq[SH_MAX_DEPTH]; /* F_BRACE inside "...": quoted like it */
    int parens[SH_MAX_DEPTH];          /* F_ARITH: open "(" inside it */
    int depth;                         /* kind[depth - 1] is the innermost */
    char delim[SH_MAX_HEREDOCS][SH_MAX_DELIM + 1];
    bool strip_tabs[SH_MAX_HEREDOCS];
    int n_here;  /* here-documents announced on the current line */
    int in_here; /* > 0: reading the body of here-document in_here - 1 */
} shell;

static frame top(const shell *sh)
{
    return sh->depth ? (frame)sh->kind[sh->depth - 1] : F_TOP;
}

static bool push(scan *s, shell *sh, frame f, size_t off)
{
    if (sh->depth >= SH_MAX_DEPTH) return fail_at(s, off, "shell command nests too deeply");
    sh->in_dq[sh->depth] =
        f == F_BRACE && (top(sh) == F_DQ || (sh->depth && sh->in_dq[sh->depth - 1]));
    sh->parens[sh->depth] = 0;
    sh->kind[sh->depth++] = (unsigned char)f;
    return true;
}

static bool starts(const scan *s, size_t i, const char *w)
{
    size_t n = strlen(w);
    return i + n <= s->len && memcmp(s->text + i, w, n) == 0;
}

/* "<<" at i: reads the delimiter word, quotes removed, for the body that
 * starts after the end of this line. Returns the offset after the word. */
static size_t heredoc_op(scan *s, shell *sh, size_t i)
{
    size_t start = i;
    i += 2;
    bool tabs = i < s->len && s->text[i] == '-';
    if (tabs) i++;
    while (i < s->len && (s->text[i] == ' ' || s->text[i] == '\t')) i++;
    char word[SH_MAX_DELIM + 1];
    size_t n = 0;
    char q = 0;
    for (; i < s->len; i++) {
        char c = s->text[i];
        if (starts(s, i, "${{")) {
            fail_at(s, i, "a ${{ }} reference cannot be a here-document's delimiter");
            return i;
        }
        if (q ? c == q : (c == '\'' || c == '"')) {
            q = q ? 0 : c;
            continue;
        }
        if (!q && (is_space(c) || strchr(";&|<>()", c))) break;
        if (!q && c == '\\' && i + 1 < s->len) c = s->text[++i];
        if (n < SH_MAX_DELIM) word[n++] = c;
    }
    word[n] = '\0';
    if (n == 0 || sh->n_here >= SH_MAX_HEREDOCS) return i > start + 2 ? i : start + 2;
    snprintf(sh->delim[sh->n_here], sizeof sh->delim[0], "%s", word);
    sh->strip_tabs[sh->n_here++] = tabs;
    return i;
}

static const char in_heredoc[] = "a ${{ }} reference in a here-document cannot be quoted safely; "
                                 "set a variable first (x=${{ ... }}) and use $x in it";

/* One line of a here-document body at i: the delimiter line ends it. */
static size_t heredoc_line(scan *s, shell *sh, size_t i)
{
    const char *nl = memchr(s->text + i, '\n', s->len - i);
    size_t end = nl ? (size_t)(nl - s->text) : s->len;
    const char *ref = memmem(s->text + i, end - i, "${{", 3);
    if (ref) fail_at(s, (size_t)(ref - s->text), in_heredoc);
    size_t b = i;
    int k = sh->in_here - 1;
    if (sh->strip_tabs[k])
        while (b < end && s->text[b] == '\t') b++;
    size_t dl = strlen(sh->delim[k]);
    if (end - b == dl && memcmp(s->text + b, sh->delim[k], dl) == 0 && ++sh->in_here > sh->n_here)
        sh->in_here = sh->n_here = 0;
    return nl ? end + 1 : end;
}

static void end_of_line(shell *sh)
{
    if (sh->n_here > 0 && !sh->in_here) sh->in_here = 1;
}

/* Word-start test for "#": a comment only begins a word. */
static bool word_start(const scan *s, size_t i)
{
    return i == 0 || strchr(" \t\n;&|()<>", s->text[i - 1]);
}

/* A "\" or "$" right before a reference would join with its quoting: \'
 * is a literal quote, and $'...' or "$(" would be shell syntax. True when
 * the character at i is not right before one. */
static bool not_before_ref(scan *s, size_t i)
{
    if (!starts(s, i + 1, "${{")) return true;
    return fail_at(s, i,
                   s->text[i] == '\\' ? "a \"\\\" right before ${{ }} would undo its quoting"
                                      : "a \"$\" right before ${{ }} would join with its value");
}

static bool opens_expansion(const scan *s, size_t i)
{
    return s->text[i] == '`' || starts(s, i, "$(") || starts(s, i, "${");
}

/* $( ), $(( )), ${ } and backquotes open a new context, quoted or not. */
static size_t step_expansion(scan *s, shell *sh, size_t i)
{
    if (starts(s, i, "$((")) return push(s, sh, F_ARITH, i) ? i + 3 : s->len;
    if (starts(s, i, "$(")) return push(s, sh, F_CMDSUB, i) ? i + 2 : s->len;
    if (starts(s, i, "${")) return push(s, sh, F_BRACE, i) ? i + 2 : s->len;
    return push(s, sh, F_BACKQ, i) ? i + 1 : s->len;
}

/* Inside '...' nothing is special but the closing quote; a comment ends
 * with its line. */
static size_t step_sq_comment(shell *sh, const scan *s, size_t i, frame f)
{
    char c = s->text[i];
    if (f == F_SQ && c == '\'') sh->depth--;
    if (f == F_COMMENT && c == '\n') {
        sh->depth--;
        end_of_line(sh);
    }
    return i + 1;
}

/* Inside "..." (or a ${ } within one, which "}" closes) only \, $ and `
 * are special: a ' there is text, never a quote. */
static size_t step_dq(scan *s, shell *sh, size_t i, bool brace)
{
    char c = s->text[i];
    if (c == (brace ? '}' : '"')) {
        sh->depth--;
        return i + 1;
    }
    if (brace && c == '"') return push(s, sh, F_DQ, i) ? i + 1 : s->len;
    if ((c == '\\' || c == '$') && !not_before_ref(s, i)) return s->len;
    if (c == '\\') return i + 2;
    if (opens_expansion(s, i)) return step_expansion(s, sh, i);
    return i + 1;
}

/* Unquoted text: at the top, in $( ), in a ${ } outside quotes, in `...`. */
static size_t step_open(scan *s, shell *sh, size_t i, frame f)
{
    char c = s->text[i];
    if ((c == '\\' || c == '$') && !not_before_ref(s, i)) return s->len;
    if (c == '\\') return i + 2;
    if (c == '\'') return push(s, sh, F_SQ, i) ? i + 1 : s->len;
    if (c == '"') return push(s, sh, F_DQ, i) ? i + 1 : s->len;
    if (c == '#' && word_start(s, i)) return push(s, sh, F_COMMENT, i) ? i + 1 : s->len;
    if (c == '`' && f == F_BACKQ) {
        sh->depth--;
        return i + 1;
    }
    if (opens_expansion(s, i)) return step_expansion(s, sh, i);
    if ((c == ')' && f == F_CMDSUB) || (c == '}' && f == F_BRACE)) sh->depth--;
    if (starts(s, i, "<<<")) return i + 3; /* a here-string, not a here-document */
    if (starts(s, i, "<<")) return heredoc_op(s, sh, i);
    if (c == '\n') end_of_line(sh);
    return i + 1;
}

static size_t step_arith(shell *sh, const scan *s, size_t i)
{
    int *open = &sh->parens[sh->depth - 1];
    if (s->text[i] == '(') {
        ++*open;
    } else if (s->text[i] == ')') {
        if (*open > 0) {
            --*open;
        } else {
            sh->depth--;
            return starts(s, i, "))") ? i + 2 : i + 1;
        }
    }
    return i + 1;
}

/* Steps over the shell syntax at i (never a reference's "${{"). Returns the
 * next offset to look at. */
static size_t sh_step(scan *s, shell *sh, size_t i)
{
    if (sh->in_here) return heredoc_line(s, sh, i);
    frame f = top(sh);
    if (f == F_SQ || f == F_COMMENT) return step_sq_comment(sh, s, i, f);
    if (f == F_DQ) return step_dq(s, sh, i, false);
    if (f == F_BRACE && sh->in_dq[sh->depth - 1]) return step_dq(s, sh, i, true);
    if (f == F_ARITH) return step_arith(sh, s, i);
    return step_open(s, sh, i, f);
}

/* How a reference at off is quoted, or false where it cannot be. */
static bool ref_quote(scan *s, const shell *sh, size_t off, int *quote)
{
    if (sh->in_here) return fail_at(s, off, in_heredoc);
    for (int d = 0; d < sh->depth; d++)
        if (sh->kind[d] == F_BACKQ)
            return fail_at(s, off,
                           "a ${{ }} reference inside `backquotes` cannot be quoted "
                           "safely; use $( ) instead");
    switch (top(sh)) {
    case F_COMMENT:
        return fail_at(s, off,
                       "a ${{ }} reference in a shell comment could end the comment; "
                       "remove it");
    case F_ARITH:
        return fail_at(s, off,
                       "a ${{ }} reference inside $(( )) cannot be quoted safely; set a "
                       "variable first (n=${{ ... }}) and use $n");
    case F_SQ:
        *quote = LOOM_TMPL_SQUOTED;
        return true;
    case F_DQ:
        *quote = LOOM_TMPL_DQUOTED;
        return true;
    default:
        /* In "${X:-...}" shells disagree on what a ' or } in the value
         * means (bash takes ' as a quote there, dash as text). */
        if (sh->depth && sh->in_dq[sh->depth - 1])
            return fail_at(s, off,
                           "a ${{ }} reference inside \"${...}\" is read differently by "
                           "different shells; set a variable first (x=${{ ... }})");
        *quote = LOOM_TMPL_BARE;
        return true;
    }
}

static size_t find_last_close(const char *t, size_t len)
{
    for (size_t i = len; i >= 2; i--)
        if (t[i - 1] == '}' && t[i - 2] == '}') return i - 2;
    return SIZE_MAX;
}

int loom_tmpl_parse(const char *text, int shell_form, loom_tmpl_t *out, char *why, size_t whylen,
                    size_t *err_off)
{
    memset(out, 0, sizeof *out);
    scan s = {.text = text, .len = strlen(text), .why = why, .whylen = whylen};
    s.last_close = find_last_close(text, s.len);
    shell sh = {0};
    size_t lit = 0, i = 0;
    while (i < s.len && !s.failed) {
        if (!starts(&s, i, "${{")) {
            i = shell_form ? sh_step(&s, &sh, i) : i + 1;
            continue;
        }
        size_t p0, p1, end;
        int quote = LOOM_TMPL_BARE;
        if (!read_ref(&s, i, &p0, &p1, &end)) break;
        if (shell_form && !ref_quote(&s, &sh, i, &quote)) break;
        add_part(out, text + lit, i - lit, false, lit, 0);
        add_part(out, text + p0, p1 - p0, true, i, quote);
        i = lit = end;
    }
    if (s.failed) {
        loom_tmpl_free(out);
        if (err_off) *err_off = s.err_off;
        return LOOM_EPARSE;
    }
    add_part(out, text + lit, s.len - lit, false, lit, 0);
    return 0;
}

/* ---- rendering ---- */

static void append_quoted(loom_buf_t *b, const char *v, int quote)
{
    if (quote == LOOM_TMPL_BARE) loom_buf_puts(b, "'");
    for (const char *p = v; *p; p++) {
        if (quote == LOOM_TMPL_DQUOTED) {
            if (strchr("\\\"$`", *p)) loom_buf_puts(b, "\\");
            loom_buf_append(b, p, 1);
        } else if (*p == '\'') {
            loom_buf_puts(b, "'\\''");
        } else {
            loom_buf_append(b, p, 1);
        }
    }
    if (quote == LOOM_TMPL_BARE) loom_buf_puts(b, "'");
}

char *loom_tmpl_render(const loom_tmpl_t *t, int shell_quote,
                       char *(*lookup)(void *ud, const char *path), void *ud, char *why,
                       size_t whylen)
{
    loom_buf_t b = {0};
    for (size_t i = 0; i < t->n_parts; i++) {
        const loom_tmpl_part_t *p = &t->parts[i];
        if (!p->is_ref) {
            loom_buf_puts(&b, p->text);
            continue;
        }
        char *v = lookup(ud, p->text);
        if (!v) {
            if (whylen) snprintf(why, whylen, "no value for %s", p->text);
            loom_buf_free(&b);
            return NULL;
        }
        if (shell_quote)
            append_quoted(&b, v, p->quote);
        else
            loom_buf_puts(&b, v);
        free(v);
    }
    return loom_buf_steal(&b);
}
