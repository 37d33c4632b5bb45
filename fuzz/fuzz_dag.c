/* The DAG parser and validator (YAML tree, tasks, templates, parameters,
 * triggers, references), from memory, as loomd parses a submitted DAG. */
#include "loom/dag.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    loom_dag_t *dag = NULL;
    loom_diags_t diags = {0};
    int rc = loom_dag_parse((const char *)data, size, "fuzz.yaml", &dag, &diags);
    if (rc == 0 && !dag) abort();
    if (rc != 0 && dag) abort();
    char *text = loom_diags_format(&diags);
    free(text);
    loom_diags_free(&diags);
    loom_dag_destroy(&dag);
    return 0;
}
