/*
 * WRITE_FILE and READ_FILE (files.c) against what a hostile workload can
 * plant at the path the host names: a symlink to a file outside or to a
 * block device, a FIFO, a name of NAME_MAX bytes. First called directly, then
 * end to end through the host-built agent (`serve --listen unix:PATH`) and
 * its client mode, which is how the e2e tests drive files.c.
 *
 * usage: test-agent-files PATH-TO-supermachine-agent
 * Runs as root (the loop device); not root, the tests fail, saying so.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "guestctl.h"
#include "../../run-suite.h"

static const char *agent;
static char *wrapper[16];
static int n_wrapper;
static char dir[64], inside[128], outside[128];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void make_dirs(void)
{
    ck_assert_msg(geteuid() == 0, "test-agent-files must run as root (the agent does, and the "
                                  "block-device case needs a loop device); run it with sudo");
    strcpy(dir, "/tmp/smk-files-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(inside, sizeof(inside), "%s/in", dir);
    snprintf(outside, sizeof(outside), "%s/out", dir);
    ck_assert_int_eq(mkdir(inside, 01777), 0);
    ck_assert_int_eq(mkdir(outside, 0755), 0);
}

static void remove_dirs(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static char *path(const char *base, const char *name)
{
    static char p[4][PATH_MAX];
    static int k;
    char *s = p[k++ % 4];
    snprintf(s, PATH_MAX, "%s/%s", base, name);
    return s;
}

static void spit(const char *p, const void *data, size_t len)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_msg(fd >= 0, "open %s: %s", p, strerror(errno));
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static int file_is(const char *p, const char *want)
{
    char buf[4096];
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    return n == (ssize_t)strlen(want) && !memcmp(buf, want, (size_t)n);
}

static int is_regular(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The entries of d other than . and ..: a leftover temporary shows here. */
static int entries(const char *d)
{
    DIR *h = opendir(d);
    ck_assert_ptr_nonnull(h);
    int n = 0;
    for (struct dirent *e; (e = readdir(h));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(h);
    return n;
}

static int write_file(const char *p, uint32_t mode, const char *data)
{
    char why[PATH_MAX + 128] = "";
    int r = smka_write_file(p, mode, (const uint8_t *)data, strlen(data), why, sizeof(why));
    ck_assert_msg(r == 0 || why[0], "no reason given for %d", r);
    return r;
}

static int read_file(const char *p, char *out, size_t out_len)
{
    char why[PATH_MAX + 128] = "";
    uint8_t *data = NULL;
    size_t len = 0;
    int truncated = 0;
    int r = smka_read_file(p, &data, &len, &truncated, why, sizeof(why));
    if (r == 0) {
        ck_assert_uint_lt(len, out_len);
        memcpy(out, data, len);
        out[len] = '\0';
        free(data);
    }
    return r;
}

/* --- WRITE_FILE, called directly ------------------------------------------- */

START_TEST(write_replaces_a_symlink_to_a_file_outside)
{
    spit(path(outside, "secret"), "host-owned\n", 11);
    ck_assert_int_eq(symlink(path(outside, "secret"), path(inside, "report")), 0);
    ck_assert_int_eq(write_file(path(inside, "report"), 0600, "from the host\n"), 0);
    ck_assert(is_regular(path(inside, "report")));
    ck_assert(file_is(path(inside, "report"), "from the host\n"));
    ck_assert(file_is(path(outside, "secret"), "host-owned\n"));
    ck_assert_int_eq(entries(inside), 1);
}
END_TEST

/* The case found in review: a guest user's symlink to a block device made
 * the root agent write the host's bytes into the device. */
START_TEST(write_never_reaches_a_block_device_behind_a_symlink)
{
    static char zeros[1 << 20];
    spit(path(outside, "disk.img"), zeros, sizeof(zeros));
    char cmd[512], dev[64] = "";
    snprintf(cmd, sizeof(cmd), "losetup --find --show '%s'", path(outside, "disk.img"));
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    int got = fgets(dev, sizeof(dev), p) != NULL;
    int st = pclose(p);
    ck_assert_msg(got && st == 0, "losetup could not attach a loop device (%s)", cmd);
    dev[strcspn(dev, "\n")] = '\0';

    ck_assert_int_eq(symlink(dev, path(inside, "out.bin")), 0);
    int r = write_file(path(inside, "out.bin"), 0644, "HOST BYTES HOST BYTES");
    struct stat sb;
    int dev_ok = stat(dev, &sb) == 0 && S_ISBLK(sb.st_mode);
    /* Read the device itself, not only its backing file, before detaching. */
    char head[64] = {0};
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? pread(fd, head, sizeof(head), 0) : -1;
    if (fd >= 0)
        close(fd);
    snprintf(cmd, sizeof(cmd), "losetup -d '%s'", dev);
    ck_assert_int_eq(system(cmd), 0);

    ck_assert_int_eq(r, 0);
    ck_assert(dev_ok);
    ck_assert_int_eq(n, (ssize_t)sizeof(head));
    ck_assert_mem_eq(head, zeros, sizeof(head));
    ck_assert(is_regular(path(inside, "out.bin")));
    ck_assert(file_is(path(inside, "out.bin"), "HOST BYTES HOST BYTES"));
    int img = open(path(outside, "disk.img"), O_RDONLY | O_CLOEXEC);
    static char back[1 << 20];
    ck_assert_int_eq(read(img, back, sizeof(back)), (ssize_t)sizeof(back));
    close(img);
    ck_assert_mem_eq(back, zeros, sizeof(back));
}
END_TEST

START_TEST(write_refuses_a_fifo_at_once)
{
    ck_assert_int_eq(mkfifo(path(inside, "fifo"), 0666), 0);
    double t0 = now_s();
    ck_assert_int_eq(write_file(path(inside, "fifo"), 0644, "x"), -EEXIST);
    ck_assert_double_lt(now_s() - t0, 1.0);
    struct stat st;
    ck_assert_int_eq(lstat(path(inside, "fifo"), &st), 0);
    ck_assert(S_ISFIFO(st.st_mode));
    /* A device node likewise: never opened, never replaced. */
    ck_assert_int_eq(write_file("/dev/null", 0644, "x"), -EEXIST);
    ck_assert_int_eq(entries(inside), 1);
}
END_TEST

START_TEST(write_names_of_244_and_255_bytes)
{
    char name[NAME_MAX + 2];
    size_t sizes[] = {244, 255};
    for (size_t i = 0; i < 2; i++) {
        memset(name, 'a' + (int)i, sizes[i]);
        name[sizes[i]] = '\0';
        ck_assert_int_eq(write_file(path(inside, name), 0644, "long name\n"), 0);
        ck_assert(file_is(path(inside, name), "long name\n"));
        ck_assert_int_eq(write_file(path(inside, name), 0644, "replaced\n"), 0);
        ck_assert(file_is(path(inside, name), "replaced\n"));
    }
    ck_assert_int_eq(entries(inside), 2);
    memset(name, 'c', NAME_MAX + 1);
    name[NAME_MAX + 1] = '\0';
    ck_assert_int_eq(write_file(path(inside, name), 0644, "x"), -ENAMETOOLONG);
    ck_assert_int_eq(entries(inside), 2);
}
END_TEST

START_TEST(write_sets_the_exact_mode_and_rejects_non_files)
{
    umask(077);
    ck_assert_int_eq(write_file(path(inside, "m"), 0751, "#!/bin/sh\n"), 0);
    struct stat st;
    ck_assert_int_eq(stat(path(inside, "m"), &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0751);
    ck_assert_int_eq(write_file(inside, 0644, "x"), -EISDIR);
    ck_assert_int_eq(write_file(path(inside, ""), 0644, "x"), -EISDIR);
    ck_assert_int_eq(write_file("/", 0644, "x"), -EISDIR);
    ck_assert_int_eq(write_file(path(inside, "."), 0644, "x"), -EISDIR);
    ck_assert_int_eq(write_file("relative", 0644, "x"), -EINVAL);
    ck_assert_int_eq(write_file(path(inside, "missing/x"), 0644, "x"), -ENOENT);
    /* A symlink to a directory is replaced by the file, like any link. */
    ck_assert_int_eq(symlink(outside, path(inside, "dirlink")), 0);
    ck_assert_int_eq(write_file(path(inside, "dirlink"), 0644, "f"), 0);
    ck_assert(is_regular(path(inside, "dirlink")));
    ck_assert_int_eq(entries(outside), 0);
}
END_TEST

START_TEST(write_on_proc_goes_in_place_and_never_through_a_link)
{
    char comm[64];
    ck_assert_int_eq(write_file("/proc/self/comm", 0644, "smk-files-test"), 0);
    ck_assert_int_eq(read_file("/proc/self/comm", comm, sizeof(comm)), 0);
    ck_assert_str_eq(comm, "smk-files-test\n");
    /* /proc/self/cwd is a symlink to a directory: not followed. */
    ck_assert_int_eq(chdir(outside), 0);
    ck_assert_int_eq(write_file("/proc/self/cwd", 0644, "x"), -ELOOP);
    ck_assert_int_eq(entries(outside), 0);
}
END_TEST

/* --- READ_FILE, called directly -------------------------------------------- */

START_TEST(read_follows_a_symlink_to_a_regular_file_only)
{
    char buf[256];
    spit(path(outside, "os-release"), "ID=debian\n", 10);
    ck_assert_int_eq(symlink("../out/os-release", path(inside, "os-release")), 0);
    ck_assert_int_eq(read_file(path(inside, "os-release"), buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "ID=debian\n");

    ck_assert_int_eq(mkfifo(path(outside, "fifo"), 0666), 0);
    ck_assert_int_eq(symlink(path(outside, "fifo"), path(inside, "to-fifo")), 0);
    ck_assert_int_eq(symlink("/dev/zero", path(inside, "to-dev")), 0);
    double t0 = now_s();
    ck_assert_int_eq(read_file(path(inside, "to-fifo"), buf, sizeof(buf)), -ELOOP);
    ck_assert_int_eq(read_file(path(inside, "to-dev"), buf, sizeof(buf)), -ELOOP);
    ck_assert_double_lt(now_s() - t0, 1.0);

    /* Named directly, a FIFO is read without waiting for a writer. */
    t0 = now_s();
    ck_assert_int_eq(read_file(path(outside, "fifo"), buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "");
    ck_assert_double_lt(now_s() - t0, 1.0);

    ck_assert_int_eq(symlink("/nonexistent", path(inside, "dangling")), 0);
    ck_assert_int_eq(read_file(path(inside, "dangling"), buf, sizeof(buf)), -ENOENT);
}
END_TEST

START_TEST(read_fd_caps_and_flags_truncation)
{
    uint8_t *data;
    size_t len;
    int truncated;
    spit(path(inside, "four"), "abcd", 4);
    int fd = open(path(inside, "four"), O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(smka_read_fd(fd, 4, &data, &len, &truncated), 0);
    close(fd);
    ck_assert_uint_eq(len, 4);
    ck_assert(!truncated);
    ck_assert_mem_eq(data, "abcd", 4);
    free(data);
    fd = open(path(inside, "four"), O_RDONLY | O_CLOEXEC);
    ck_assert_int_eq(smka_read_fd(fd, 3, &data, &len, &truncated), 0);
    close(fd);
    ck_assert_uint_eq(len, 3);
    ck_assert(truncated);
    free(data);
    /* A pipe with bytes in it and a writer still there: what is there now. */
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    ck_assert_int_eq(write(p[1], "xyz", 3), 3);
    ck_assert_int_eq(smka_read_fd(p[0], 100, &data, &len, &truncated), 0);
    ck_assert_uint_eq(len, 3);
    ck_assert(!truncated);
    free(data);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* --- the same through the agent -------------------------------------------- */

static pid_t agent_pid;
static char addr[160];

static pid_t spawn(char *const *args, int quiet)
{
    char *argv[64];
    int k = 0;
    for (int i = 0; i < n_wrapper; i++)
        argv[k++] = wrapper[i];
    argv[k++] = (char *)agent;
    for (int i = 0; args[i] && k < 63; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (quiet) {
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid)
{
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int client(char *const *args)
{
    char *argv[16] = {"client", addr};
    int k = 2;
    for (int i = 0; args[i] && k < 15; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    return wait_exit(spawn(argv, 1));
}

static void start_agent(void)
{
    make_dirs();
    char listen[160];
    snprintf(listen, sizeof(listen), "unix:%s/agent.sock", dir);
    snprintf(addr, sizeof(addr), "unix:%s/agent.sock", dir);
    char *args[] = {"serve", "--listen", listen, NULL};
    agent_pid = spawn(args, 0);
    char *ping[] = {"ping", "--wait", "20", NULL};
    ck_assert_msg(client(ping) == 0, "the agent did not come up");
}

static void stop_agent(void)
{
    if (agent_pid > 0) {
        kill(agent_pid, SIGTERM);
        waitpid(agent_pid, NULL, 0);
        agent_pid = 0;
    }
    remove_dirs();
}

START_TEST(agent_write_replaces_a_planted_symlink)
{
    spit(path(outside, "secret"), "host-owned\n", 11);
    spit(path(dir, "local"), "from the host\n", 14);
    ck_assert_int_eq(symlink(path(outside, "secret"), path(inside, "report")), 0);
    char *w[] = {"write", path(inside, "report"), path(dir, "local"), NULL};
    ck_assert_int_eq(client(w), 0);
    ck_assert(is_regular(path(inside, "report")));
    ck_assert(file_is(path(inside, "report"), "from the host\n"));
    ck_assert(file_is(path(outside, "secret"), "host-owned\n"));
}
END_TEST

/* Writes to FIFOs used to block their handlers for good: with more of them
 * than the agent serves at once, it stopped answering anyone. */
START_TEST(agent_fifo_writes_fail_fast_and_the_agent_keeps_answering)
{
    enum { N = 12 };
    ck_assert_int_eq(mkfifo(path(inside, "fifo"), 0666), 0);
    spit(path(dir, "local"), "x", 1);
    double t0 = now_s();
    pid_t pids[N];
    char *w[] = {"write", path(inside, "fifo"), path(dir, "local"), NULL};
    for (int i = 0; i < N; i++) {
        char *argv[8] = {"client", addr, w[0], w[1], w[2], NULL};
        pids[i] = spawn(argv, 1);
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(wait_exit(pids[i]), 1);
    double took = now_s() - t0;
    ck_assert_msg(took < 20, "%d refused FIFO writes took %.1f s", N, took);
    char *ping[] = {"ping", NULL};
    ck_assert_int_eq(client(ping), 0);
    struct stat st;
    ck_assert_int_eq(lstat(path(inside, "fifo"), &st), 0);
    ck_assert(S_ISFIFO(st.st_mode));
}
END_TEST

START_TEST(agent_write_of_a_255_byte_name)
{
    char name[NAME_MAX + 1];
    memset(name, 'n', NAME_MAX);
    name[NAME_MAX] = '\0';
    spit(path(dir, "local"), "long\n", 5);
    char *w[] = {"write", path(inside, name), path(dir, "local"), NULL};
    ck_assert_int_eq(client(w), 0);
    ck_assert(file_is(path(inside, name), "long\n"));
    ck_assert_int_eq(entries(inside), 1);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH-TO-supermachine-agent\n", argv[0]);
        return 2;
    }
    agent = argv[1];
    static char wrap[512];
    snprintf(wrap, sizeof(wrap), "%s",
             getenv("SMK_TEST_WRAPPER") ? getenv("SMK_TEST_WRAPPER") : "");
    for (char *w = strtok(wrap, " "); w && n_wrapper < 15; w = strtok(NULL, " "))
        wrapper[n_wrapper++] = w;
    signal(SIGPIPE, SIG_IGN);
    if (geteuid() != 0)
        fprintf(stderr, "test-agent-files: not root: the tests fail (they need root)\n");

    Suite *s = suite_create("agent files");
    TCase *tc = tcase_create("direct");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, make_dirs, remove_dirs);
    tcase_add_test(tc, write_replaces_a_symlink_to_a_file_outside);
    tcase_add_test(tc, write_never_reaches_a_block_device_behind_a_symlink);
    tcase_add_test(tc, write_refuses_a_fifo_at_once);
    tcase_add_test(tc, write_names_of_244_and_255_bytes);
    tcase_add_test(tc, write_sets_the_exact_mode_and_rejects_non_files);
    tcase_add_test(tc, write_on_proc_goes_in_place_and_never_through_a_link);
    tcase_add_test(tc, read_follows_a_symlink_to_a_regular_file_only);
    tcase_add_test(tc, read_fd_caps_and_flags_truncation);
    suite_add_tcase(s, tc);

    tc = tcase_create("through the agent");
    tcase_set_timeout(tc, 90);
    tcase_add_checked_fixture(tc, start_agent, stop_agent);
    tcase_add_test(tc, agent_write_replaces_a_planted_symlink);
    tcase_add_test(tc, agent_fifo_writes_fail_fast_and_the_agent_keeps_answering);
    tcase_add_test(tc, agent_write_of_a_255_byte_name);
    suite_add_tcase(s, tc);

    return run_suite(s, CK_ENV);
}
