/* sandbox-exec CGROUP_PROCS MNT_NS CWD PROGRAM [ARG...]
 *
 * Puts itself into a sandbox, then becomes PROGRAM: joins the cgroup whose cgroup.procs file
 * is CGROUP_PROCS (skipped when empty), enters the mount namespace MNT_NS (/proc/PID/ns/mnt of
 * the sandbox's holder; skipped when empty), changes to CWD as seen from inside. One small
 * static exec per command where a shell plus nsenter cost two dynamically linked ones.
 * Exit 126 when it cannot, with the reason on stderr (127: PROGRAM not found). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
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
        int namespace = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (namespace < 0 || setns(namespace, CLONE_NEWNS) != 0) {
            perror("entering the sandbox's mount namespace");
            return 126;
        }
        close(namespace);
    }
    if (chdir(argv[3]) != 0) {
        perror(argv[3]);
        return 126;
    }
    execvp(argv[4], argv + 4);
    perror(argv[4]);
    return 127;
}
