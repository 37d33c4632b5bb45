/* `loom graph FILE`: placeholder until the DAG-format work lands. */
#include "cli.h"

int cmd_graph(loom_cli_t *cli, int argc, char **argv)
{
    int stop = cli_opts_common_only(cli, argc, argv);
    if (stop >= 0) return stop;
    return cli_usage_error(cli, "not implemented yet");
}
