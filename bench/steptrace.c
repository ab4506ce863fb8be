/* steptrace PROGRAM [ARGS...]: runs PROGRAM (stdin, stdout and environment
 * passed on) single-stepping it with ptrace, and writes every distinct
 * instruction address it executed below 16 MiB (the static binary's code),
 * one hex number a line, to the file named by $TRACE_OUT.
 *
 * Used to check scripts/static-layout.ld: link the static build once more
 * with -C link-arg=-Wl,-Map=FILE, trace a plugin call, and look up the
 * addresses in the map: nothing in .text.rare should run, and of
 * .text.applets only the called applet's block. Slow (a bridge ADD is ~0.4M
 * steps, ~30 s); it follows the one process only, not what it execs. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#define LIMIT 0x1000000
static unsigned char seen[LIMIT];

int main(int argc, char **argv) {
    const char *out = getenv("TRACE_OUT");
    if (argc < 2 || !out)
        return 2;
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execv(argv[1], argv + 1);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return 1;
    long steps = 0;
    int sig = 0;
    for (;;) {
        struct user_regs_struct regs;
        if (ptrace(PTRACE_GETREGS, pid, 0, &regs) == 0 && regs.rip < LIMIT)
            seen[regs.rip] = 1;
        if (ptrace(PTRACE_SINGLESTEP, pid, 0, sig) < 0 || waitpid(pid, &status, 0) < 0)
            break;
        if (WIFEXITED(status) || WIFSIGNALED(status))
            break;
        /* Hand any other signal on to the tracee with the next step. */
        sig = WSTOPSIG(status) == SIGTRAP ? 0 : WSTOPSIG(status);
        steps++;
    }
    FILE *f = fopen(out, "w");
    if (!f)
        return 1;
    for (long a = 0; a < LIMIT; a++)
        if (seen[a])
            fprintf(f, "%lx\n", a);
    fclose(f);
    fprintf(stderr, "steptrace: %ld steps\n", steps);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
