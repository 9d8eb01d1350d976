/* sandbox-exec CGROUP_PROCS MNT_NS_FD CWD PROGRAM [ARG...]
 *
 * Puts itself into a sandbox, then becomes PROGRAM: joins the cgroup whose cgroup.procs file
 * is CGROUP_PROCS (skipped when empty), enters the mount namespace open on descriptor MNT_NS_FD
 * (passed down by the server, closed before PROGRAM starts; skipped when empty), changes to CWD
 * as seen from inside. One small static exec per command where a shell plus nsenter cost two
 * dynamically linked ones. Exit 126 when it cannot, with the reason on stderr (127: PROGRAM not
 * found). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: sandbox-exec CGROUP_PROCS MNT_NS CWD PROGRAM [ARG...]\n");
        return 126;
    }
    if (argv[1][0]) {
        int procs = open(argv[1], O_WRONLY | O_CLOEXEC);
        if (procs < 0 || dprintf(procs, "%d\n", getpid()) < 0) {
            perror("joining the sandbox's cgroup");
            return 126;
        }
        close(procs);
    }
    if (argv[2][0]) {
        char *end;
        long namespace = strtol(argv[2], &end, 10);
        if (end == argv[2] || *end || namespace < 0 || namespace > INT_MAX) {
            fprintf(stderr, "not a descriptor: %s\n", argv[2]);
            return 126;
        }
        if (setns((int)namespace, CLONE_NEWNS) != 0) {
            perror("entering the sandbox's mount namespace");
            return 126;
        }
        close((int)namespace);
    }
    if (chdir(argv[3]) != 0) {
        perror(argv[3]);
        return 126;
    }
    execvp(argv[4], argv + 4);
    perror(argv[4]);
    return 127;
}
