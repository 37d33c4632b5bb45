/* loom-bench-stamp FILE NAME: appends "NAME <monotonic ns>\n" to FILE with
 * one write and exits. Benchmark tasks run it so that the gap between one
 * task's stamp and the next one's measures scheduling, not the task. */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (argc != 3) {
        fprintf(stderr, "usage: loom-bench-stamp FILE NAME\n");
        return 2;
    }
    char line[256];
    int n = snprintf(line, sizeof line, "%s %lld\n", argv[2],
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || n <= 0 || write(fd, line, (size_t)n) != n) return 1;
    return close(fd) == 0 ? 0 : 1;
}
