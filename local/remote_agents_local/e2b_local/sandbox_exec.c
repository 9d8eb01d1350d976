/* sandbox-exec: the two steps of e2b-local's sandbox boundary that bubblewrap cannot do.
 *
 *   sandbox-exec [--cgroup PROCS]... [--stage NAME=PATH]... [--[ro-]overlay NAME=LOWER[+LOWER]...:UPPER:WORK]...
 *                --map BASE:COUNT -- PROGRAM [ARG...]
 *       "init": joins the cgroups; in a private mount namespace bind-mounts each PATH (the
 *       sandbox's directories, in the server's 0700 state dir) on /tmp/NAME of a fresh tmpfs, where
 *       the sandbox's root may reach them, and mounts each overlay (the LOWERs read-only, first on
 *       top, under UPPER: a template's layer under the sandbox's own writes) on /tmp/NAME
 *       likewise, in order (a LOWER "@NAME" is the overlay mounted on /tmp/NAME before; --ro-overlay
 *       mounts it read-only, UPPER then being a lower layer shared with other mounts); creates a user namespace in which uids/gids 0..COUNT-1
 *       are host BASE..BASE+COUNT-1, becomes its root and execs PROGRAM (bwrap, which builds the
 *       sandbox's mount/pid/ipc/uts/cgroup namespaces inside it). A forked child writes the maps,
 *       because only a process outside the new namespace may map more than one id.
 *
 *   sandbox-exec [--cgroup PROCS]... [--ns FD]... --user UID:GID --cwd DIR [--report FD]
 *                [--keep-caps] -- PROGRAM [ARG...]
 *       "enter": joins the cgroups, then every namespace open on an FD (in order: user first),
 *       forks (a pid namespace applies to children only), and the child switches to UID:GID with
 *       no_new_privs, changes to DIR, writes its pid as seen inside to the REPORT fd and execs
 *       PROGRAM. --keep-caps (root) keeps the user namespace's capabilities except
 *       CAP_SYS_ADMIN, so root inside can chown or kill but not unmount what hides the host.
 *       The parent stays to pass the child's exit status (or death by signal) to its own parent.
 *
 * Exit 126 when it cannot, with the reason on stderr (127: PROGRAM not found). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LIST 16

static int fail(const char *what) {
    fprintf(stderr, "sandbox-exec: %s: %s\n", what, strerror(errno));
    return 126;
}

static int number(const char *text, long *out) {
    char *end;
    errno = 0;
    *out = strtol(text, &end, 10);
    return end != text && !*end && !errno && *out >= 0 && *out <= INT_MAX;
}

static int pair(const char *text, long *a, long *b) {
    char copy[64];
    char *colon;
    if (strlen(text) >= sizeof copy) return 0;
    strcpy(copy, text);
    colon = strchr(copy, ':');
    if (!colon) return 0;
    *colon = 0;
    return number(copy, a) && number(colon + 1, b);
}

static int write_file(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ssize_t n;
    if (fd < 0) return -1;
    n = write(fd, data, strlen(data));
    close(fd);
    return n == (ssize_t)strlen(data) ? 0 : -1;
}

static int join_cgroups(char **procs, int count) {
    char pid[32];
    snprintf(pid, sizeof pid, "%d\n", getpid());
    for (int i = 0; i < count; i++)
        if (write_file(procs[i], pid) != 0) return fail(procs[i]);
    return 0;
}

/* One --[ro-]overlay NAME=LOWER[+LOWER]...:UPPER:WORK: its directories opened at once (before /tmp
 * is covered), mounted later through their /proc/self/fd paths; a LOWER "@NAME" is the overlay
 * mounted on /tmp/NAME before this one. */
#define MAX_LOWER 4
struct overlay {
    char *name, *lower_names[MAX_LOWER];
    int read_only, upper, work, lower_count, lowers[MAX_LOWER]; /* lowers[i] < 0: lower_names[i] */
};

static int open_overlay(char *spec, int read_only, struct overlay *o) {
    char *equals = strchr(spec, '='), *work, *upper, *next;
    if (!equals || equals == spec || memchr(spec, '/', equals - spec)) return -1;
    *equals = 0;
    o->name = spec;
    o->read_only = read_only;
    next = equals + 1;
    if (!(work = strrchr(next, ':'))) return -1;
    *work++ = 0;
    if (!(upper = strrchr(next, ':'))) return -1;
    *upper++ = 0;
    if ((o->upper = open(upper, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) return fail(upper), -1;
    if ((o->work = open(work, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) return fail(work), -1;
    for (o->lower_count = 0; next; o->lower_count++) {
        char *plus = strchr(next, '+');
        if (plus) *plus = 0;
        if (o->lower_count == MAX_LOWER || !*next) return -1;
        o->lower_names[o->lower_count] = next + 1;
        o->lowers[o->lower_count] = *next == '@' ? -1 : open(next, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (*next != '@' && o->lowers[o->lower_count] < 0) return fail(next), -1;
        next = plus ? plus + 1 : NULL;
    }
    return 0;
}

static int mount_overlay(struct overlay *o) {
    char target[PATH_MAX], options[1024];
    int used = snprintf(options, sizeof options, "index=off,upperdir=/proc/self/fd/%d,workdir=/proc/self/fd/%d,lowerdir=",
                        o->upper, o->work);
    for (int j = 0; j < o->lower_count && used < (int)sizeof options; j++) {
        if (o->lowers[j] >= 0)
            used += snprintf(options + used, sizeof options - used, "%s/proc/self/fd/%d", j ? ":" : "", o->lowers[j]);
        else
            used += snprintf(options + used, sizeof options - used, "%s/tmp/%s", j ? ":" : "", o->lower_names[j]);
    }
    if (used >= (int)sizeof options) return fail("overlay options too long");
    snprintf(target, sizeof target, "/tmp/%s", o->name);
    if (mkdir(target, 0755) != 0) return fail(target);
    if (mount("e2b-layer", target, "overlay", MS_NOSUID | MS_NODEV | (o->read_only ? MS_RDONLY : 0), options) != 0)
        return fail(target);
    close(o->upper);
    close(o->work);
    for (int j = 0; j < o->lower_count; j++)
        if (o->lowers[j] >= 0) close(o->lowers[j]);
    return 0;
}

static int stage(char **stages, int count, char **overlays, int *read_only, int overlay_count) {
    char target[PATH_MAX], source[64];
    int fds[MAX_LIST];
    struct overlay layers[MAX_LIST];
    struct stat info;
    if (unshare(CLONE_NEWNS) != 0) return fail("creating the staging mount namespace");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return fail("making mounts private");
    /* Opened (in this namespace) before the tmpfs covers /tmp, where a state dir may be. */
    for (int i = 0; i < count; i++) {
        char *equals = strchr(stages[i], '=');
        if (!equals || equals == stages[i] || memchr(stages[i], '/', equals - stages[i])) {
            fprintf(stderr, "sandbox-exec: bad --stage %s\n", stages[i]);
            return 126;
        }
        *equals = 0;
        fds[i] = open(equals + 1, O_PATH | O_CLOEXEC);
        if (fds[i] < 0) return fail(equals + 1);
    }
    for (int i = 0; i < overlay_count; i++) {
        if (open_overlay(overlays[i], read_only[i], &layers[i]) != 0) {
            fprintf(stderr, "sandbox-exec: bad --overlay %s\n", overlays[i]);
            return 126;
        }
    }
    if (mount("e2b-stage", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) return fail("staging tmpfs");
    for (int i = 0; i < overlay_count; i++)
        if (mount_overlay(&layers[i]) != 0) return 126;
    for (int i = 0; i < count; i++) {
        snprintf(target, sizeof target, "/tmp/%s", stages[i]);
        snprintf(source, sizeof source, "/proc/self/fd/%d", fds[i]);
        if (fstat(fds[i], &info) != 0) return fail(target);
        if (S_ISDIR(info.st_mode) ? mkdir(target, 0755) != 0 : close(open(target, O_CREAT | O_WRONLY, 0644)) != 0)
            return fail(target);
        if (mount(source, target, NULL, MS_BIND | MS_REC, NULL) != 0) return fail(target);
        close(fds[i]);
    }
    return 0;
}

static int init(long base, long count, char **program) {
    int ready[2];
    char byte = 0, path[64], map[96];
    pid_t parent = getpid(), mapper;
    int status;
    if (pipe2(ready, O_CLOEXEC) != 0) return fail("pipe");
    mapper = fork();
    if (mapper < 0) return fail("fork");
    if (mapper == 0) {
        close(ready[1]);
        if (read(ready[0], &byte, 1) != 1) _exit(1);
        snprintf(map, sizeof map, "0 %ld %ld\n", base, count);
        snprintf(path, sizeof path, "/proc/%d/uid_map", parent);
        if (write_file(path, map) != 0) _exit(fail(path));
        snprintf(path, sizeof path, "/proc/%d/gid_map", parent);
        if (write_file(path, map) != 0) _exit(fail(path));
        _exit(0);
    }
    close(ready[0]);
    if (unshare(CLONE_NEWUSER) != 0) return fail("creating the user namespace");
    if (write(ready[1], &byte, 1) != 1) return fail("signalling the mapper");
    close(ready[1]);
    if (waitpid(mapper, &status, 0) != mapper || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "sandbox-exec: the user namespace's ids could not be mapped\n");
        return 126;
    }
    if (setgroups(0, NULL) != 0 || setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)
        return fail("becoming root of the user namespace");
    execvp(program[0], program);
    fail(program[0]);
    return 127;
}

static int drop_sys_admin(void) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) != 0) return -1;
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    data[CAP_SYS_ADMIN / 32].effective &= ~(1u << (CAP_SYS_ADMIN % 32));
    data[CAP_SYS_ADMIN / 32].permitted &= ~(1u << (CAP_SYS_ADMIN % 32));
    data[CAP_SYS_ADMIN / 32].inheritable &= ~(1u << (CAP_SYS_ADMIN % 32));
    return (int)syscall(SYS_capset, &header, data);
}

static int enter(int *namespaces, int ns_count, long uid, long gid, const char *cwd, int report,
                 int keep_caps, char **program) {
    pid_t child;
    int status;
    for (int i = 0; i < ns_count; i++) {
        if (setns(namespaces[i], 0) != 0) return fail("entering the sandbox's namespaces");
        close(namespaces[i]);
    }
    child = fork();
    if (child < 0) return fail("starting in the sandbox's pid namespace");
    if (child == 0) {
        gid_t group = (gid_t)gid;
        char pid[32];
        if (setgroups(1, &group) != 0 || setresgid(gid, gid, gid) != 0) _exit(fail("setting the group"));
        if (keep_caps && uid == 0) {
            if (drop_sys_admin() != 0) _exit(fail("dropping CAP_SYS_ADMIN"));
        }
        if (setresuid(uid, uid, uid) != 0) _exit(fail("setting the user"));
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(fail("no_new_privs"));
        if (chdir(cwd) != 0) _exit(fail(cwd));
        if (report >= 0) {
            snprintf(pid, sizeof pid, "%d\n", getpid());
            if (write(report, pid, strlen(pid)) < 0) _exit(fail("reporting the pid"));
            close(report);
        }
        execvp(program[0], program);
        fail(program[0]);
        _exit(127);
    }
    if (report >= 0) close(report);
    /* Signals for the command reach it directly (same process group); this relay must outlive
     * a SIGTERM to the group to report how the command ended. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR) return fail("waiting for the command");
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* no core file of the relay */
        kill(getpid(), WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}

int main(int argc, char **argv) {
    char *cgroups[MAX_LIST], *stages[MAX_LIST], *overlays[MAX_LIST];
    int namespaces[MAX_LIST], read_only[MAX_LIST], cgroup_count = 0, stage_count = 0, overlay_count = 0, ns_count = 0, report = -1, keep_caps = 0, i;
    long base = -1, count = 0, uid = -1, gid = -1, value;
    const char *cwd = NULL;
    /* Not dumpable: while it holds host root in the sandbox's namespaces, no process in the
     * sandbox may ptrace it or open its /proc files (reset when PROGRAM is exec'd). */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *option = argv[i], *arg = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(option, "--keep-caps")) { keep_caps = 1; continue; }
        if (!arg) break;
        i++;
        if (!strcmp(option, "--cgroup") && cgroup_count < MAX_LIST) cgroups[cgroup_count++] = (char *)arg;
        else if (!strcmp(option, "--stage") && stage_count < MAX_LIST) stages[stage_count++] = (char *)arg;
        else if ((!strcmp(option, "--overlay") || !strcmp(option, "--ro-overlay")) && overlay_count < MAX_LIST) {
            read_only[overlay_count] = option[2] == 'r';
            overlays[overlay_count++] = (char *)arg;
        }
        else if (!strcmp(option, "--ns") && ns_count < MAX_LIST && number(arg, &value)) namespaces[ns_count++] = (int)value;
        else if (!strcmp(option, "--map") && pair(arg, &base, &count) && count > 0) ;
        else if (!strcmp(option, "--user") && pair(arg, &uid, &gid)) ;
        else if (!strcmp(option, "--cwd")) cwd = arg;
        else if (!strcmp(option, "--report") && number(arg, &value)) report = (int)value;
        else { fprintf(stderr, "sandbox-exec: bad option %s %s\n", option, arg); return 126; }
    }
    if (i >= argc - 1) {
        fprintf(stderr, "usage: sandbox-exec [OPTIONS] -- PROGRAM [ARG...] (see sandbox_exec.c)\n");
        return 126;
    }
    if (join_cgroups(cgroups, cgroup_count) != 0) return 126;
    if (base >= 0) {
        if ((stage_count || overlay_count) && stage(stages, stage_count, overlays, read_only, overlay_count) != 0) return 126;
        return init(base, count, argv + i + 1);
    }
    if (uid < 0 || !cwd) {
        fprintf(stderr, "sandbox-exec: entering needs --user and --cwd\n");
        return 126;
    }
    return enter(namespaces, ns_count, uid, gid, cwd, report, keep_caps, argv + i + 1);
}
