/* maxrss PROGRAM: runs PROGRAM (stdin, stdout and environment passed on) and
 * prints its peak RSS in KiB, including the descendants it waited for (a
 * reference plugin's exec'd IPAM plugin).
 *
 * Linux carries a process's RSS high-water mark across exec, so a plugin
 * started straight from the (large) benchmark driver would report the
 * driver's RSS. Forked from this tiny static program it starts from ~nothing. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        execv(argv[1], argv + 1);
        _exit(127);
    }
    int status;
    struct rusage usage;
    if (wait4(pid, &status, 0, &usage) < 0)
        return 1;
    fprintf(stderr, "maxrss %ld\n", usage.ru_maxrss);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
