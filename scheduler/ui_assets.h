/* The web UI's files, embedded at build time by cmake/embed_ui.cmake from
 * ui/ (the generated ui_assets.c lives in the build folder). */
#ifndef LOOM_UI_ASSETS_H
#define LOOM_UI_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path; /* relative to ui/, e.g. "app.js" */
    const char *content_type;
    const unsigned char *data;
    size_t len;
    const char *etag; /* quoted, as sent in the ETag header */
} loom_ui_asset_t;

/* A hash of all assets: the immutable URLs are /ui/_/VERSION/PATH. */
extern const char loom_ui_version[];
extern const loom_ui_asset_t loom_ui_assets[];
extern const size_t loom_ui_n_assets;

#endif
