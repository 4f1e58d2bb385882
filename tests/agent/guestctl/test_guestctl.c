/*
 * guestctl.c apart from the network: the clock (validation and permission
 * only: CLOCK_REALTIME has no namespace, and this host's clock is not ours
 * to move; the boot test sets a guest's), the entropy pool, resolv.conf,
 * the host name and /etc/hosts. The files are written into a temporary
 * directory given as etc_dir, and once as /etc itself inside a mount
 * namespace with a tmpfs over /etc.
 *
 * Runs as root (entropy, host name and mount namespace need it); not root,
 * the tests fail, saying so.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guestctl.h"
#include "../../run-suite.h"

static char dir[64], etc[128], outside[128];

static void need_root(void)
{
    ck_assert_msg(geteuid() == 0, "test-guestctl must run as root (entropy, host name, mount "
                                  "namespaces); run it with sudo");
}

static void make_dirs(void)
{
    need_root();
    strcpy(dir, "/tmp/smk-guestctl-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(etc, sizeof(etc), "%s/etc", dir);
    snprintf(outside, sizeof(outside), "%s/outside", dir);
    ck_assert_int_eq(mkdir(etc, 0755), 0);
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
    static char p[4][256];
    static int k;
    char *s = p[k++ % 4];
    snprintf(s, 256, "%s/%s", base, name);
    return s;
}

static char *slurp(const char *p)
{
    static char buf[65536];
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    ck_assert_msg(fd >= 0, "open %s: %s", p, strerror(errno));
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    ck_assert_int_ge(n, 0);
    buf[n] = '\0';
    return buf;
}

static void spit(const char *p, const char *s)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, s, strlen(s)), (ssize_t)strlen(s));
    close(fd);
}

static int is_regular(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* No ".smk-" temporary is left in d. */
static int no_temporaries(const char *d)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls -A '%s' | grep -q '^\\.smk-'", d);
    return system(cmd) != 0;
}

/* Runs fn in a child as uid/gid 65534 and returns its result. */
static int as_nobody(int (*fn)(void))
{
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int r = 1;
        if (setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0 && geteuid() != 0)
            r = fn();
        ssize_t w = write(pipefd[1], &r, sizeof(r));
        _exit(w == sizeof(r) ? 0 : 1);
    }
    close(pipefd[1]);
    int r = 0, st;
    ck_assert_int_eq(read(pipefd[0], &r, sizeof(r)), (ssize_t)sizeof(r));
    close(pipefd[0]);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(r != 1, "could not drop to uid 65534");
    return r;
}

/* --- clock ----------------------------------------------------------------- */

START_TEST(clock_rejects_bad_times)
{
    ck_assert_int_eq(smka_clock_set(0, -1), -EINVAL);
    ck_assert_int_eq(smka_clock_set(0, 1000000000), -EINVAL);
    ck_assert_int_eq(smka_clock_set(1700000000, 1000000000), -EINVAL);
    ck_assert_int_eq(smka_clock_set(-1, 0), -EINVAL);
    ck_assert_int_eq(smka_clock_set(INT64_MIN, 0), -EINVAL);
}
END_TEST

static int set_clock_to_now(void)
{
    /* If this ever succeeded it would set the time it read: no harm done. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return smka_clock_set(ts.tv_sec, ts.tv_nsec);
}

START_TEST(clock_needs_cap_sys_time)
{
    need_root();
    ck_assert_int_eq(as_nobody(set_clock_to_now), -EPERM);
}
END_TEST

/* --- entropy --------------------------------------------------------------- */

START_TEST(entropy_is_added_and_the_crng_reseeded)
{
    need_root();
    uint8_t seed[64];
    ck_assert_int_eq(getrandom(seed, sizeof(seed), 0), (ssize_t)sizeof(seed));
    ck_assert_int_eq(smka_entropy_add(seed, sizeof(seed), 8 * sizeof(seed)), 0);
    ck_assert_int_eq(smka_entropy_add(seed, sizeof(seed), 0), 0);
}
END_TEST

START_TEST(crng_is_reseeded_alone)
{
    need_root();
    ck_assert_int_eq(smka_entropy_add(NULL, 0, 0), 0);
}
END_TEST

START_TEST(entropy_rejects_bad_arguments)
{
    uint8_t seed[16] = {1};
    static uint8_t big[SMKA_ENTROPY_MAX + 1];
    ck_assert_int_eq(smka_entropy_add(seed, sizeof(seed), 8 * sizeof(seed) + 1), -EINVAL);
    ck_assert_int_eq(smka_entropy_add(NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(smka_entropy_add(big, sizeof(big), 0), -EMSGSIZE);
}
END_TEST

static int add_entropy(void)
{
    uint8_t seed[32] = {1, 2, 3};
    return smka_entropy_add(seed, sizeof(seed), 0);
}

static int reseed(void)
{
    return smka_entropy_add(NULL, 0, 0);
}

START_TEST(entropy_needs_cap_sys_admin)
{
    need_root();
    ck_assert_int_eq(as_nobody(add_entropy), -EPERM);
}
END_TEST

START_TEST(reseed_needs_cap_sys_admin)
{
    need_root();
    ck_assert_int_eq(as_nobody(reseed), -EPERM);
}
END_TEST

/* --- resolv.conf ----------------------------------------------------------- */

static const char *ns[] = {"10.0.2.3", "2001:db8::53", "fe80::1%eth0"};
static const char *search[] = {"corp.example", "example"};
static const char *opts[] = {"ndots:2", "edns0", "timeout:1"};
static const struct smka_dns dns = {ns, 3, search, 2, opts, 3};
static const char expected_resolv[] = "# written by supermachine-agent\n"
                                      "nameserver 10.0.2.3\n"
                                      "nameserver 2001:db8::53\n"
                                      "nameserver fe80::1%eth0\n"
                                      "search corp.example example\n"
                                      "options ndots:2 edns0 timeout:1\n";

START_TEST(resolv_conf_is_written_whole)
{
    spit(path(etc, "resolv.conf"), "nameserver 192.0.2.1\nnameserver 192.0.2.2\n");
    ck_assert_int_eq(smka_dns_write(etc, &dns), 0);
    ck_assert_str_eq(slurp(path(etc, "resolv.conf")), expected_resolv);
    struct stat st;
    ck_assert_int_eq(stat(path(etc, "resolv.conf"), &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    ck_assert(no_temporaries(etc));

    const char *one[] = {"1.1.1.1"};
    struct smka_dns only = {one, 1, NULL, 0, NULL, 0};
    ck_assert_int_eq(smka_dns_write(etc, &only), 0);
    ck_assert_str_eq(slurp(path(etc, "resolv.conf")),
                     "# written by supermachine-agent\nnameserver 1.1.1.1\n");
}
END_TEST

START_TEST(resolv_conf_symlink_is_replaced_not_followed)
{
    /* Debian with systemd-resolved: /etc/resolv.conf -> ../run/...; the
     * link's target must stay as it was. */
    spit(path(outside, "stub-resolv.conf"), "nameserver 127.0.0.53\n");
    ck_assert_int_eq(symlink("../outside/stub-resolv.conf", path(etc, "resolv.conf")), 0);
    ck_assert_int_eq(smka_dns_write(etc, &dns), 0);
    ck_assert(is_regular(path(etc, "resolv.conf")));
    ck_assert_str_eq(slurp(path(etc, "resolv.conf")), expected_resolv);
    ck_assert_str_eq(slurp(path(outside, "stub-resolv.conf")), "nameserver 127.0.0.53\n");

    /* A dangling link is replaced the same way. */
    ck_assert_int_eq(unlink(path(etc, "resolv.conf")), 0);
    ck_assert_int_eq(symlink("/nonexistent/resolv.conf", path(etc, "resolv.conf")), 0);
    ck_assert_int_eq(smka_dns_write(etc, &dns), 0);
    ck_assert(is_regular(path(etc, "resolv.conf")));
}
END_TEST

START_TEST(resolv_conf_bad_entries_are_refused)
{
    spit(path(etc, "resolv.conf"), "keep\n");
    const char *four[] = {"1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"};
    struct smka_dns d = {four, 4, NULL, 0, NULL, 0};
    ck_assert_int_eq(smka_dns_write(etc, &d), -E2BIG);
    const char *bad_ns[] = {"1.2.3.4 evil",
                            "1.2.3.4\nsearch evil",
                            "dns.example",
                            "1.2.3.4%eth0",
                            "fe80::1%",
                            "fe80::1%a b",
                            ""};
    for (size_t i = 0; i < sizeof(bad_ns) / sizeof(bad_ns[0]); i++) {
        struct smka_dns b = {&bad_ns[i], 1, NULL, 0, NULL, 0};
        ck_assert_msg(smka_dns_write(etc, &b) == -EINVAL, "accepted nameserver '%s'", bad_ns[i]);
    }
    const char *bad_search[] = {"a b", "x\noptions debug", ".lead", "", "a#b"};
    for (size_t i = 0; i < sizeof(bad_search) / sizeof(bad_search[0]); i++) {
        struct smka_dns b = {ns, 1, &bad_search[i], 1, NULL, 0};
        ck_assert_msg(smka_dns_write(etc, &b) == -EINVAL, "accepted search '%s'", bad_search[i]);
    }
    const char *bad_opt[] = {"ndots: 2", "x\nnameserver 6.6.6.6", ""};
    for (size_t i = 0; i < sizeof(bad_opt) / sizeof(bad_opt[0]); i++) {
        struct smka_dns b = {ns, 1, NULL, 0, &bad_opt[i], 1};
        ck_assert_msg(smka_dns_write(etc, &b) == -EINVAL, "accepted option '%s'", bad_opt[i]);
    }
    struct smka_dns null_list = {NULL, 1, NULL, 0, NULL, 0};
    ck_assert_int_eq(smka_dns_write(etc, &null_list), -EINVAL);
    ck_assert_int_eq(smka_dns_write(etc, NULL), -EINVAL);
    ck_assert_str_eq(slurp(path(etc, "resolv.conf")), "keep\n");
}
END_TEST

START_TEST(resolv_conf_fifo_is_refused_at_once)
{
    ck_assert_int_eq(mkfifo(path(etc, "resolv.conf"), 0644), 0);
    time_t t0 = time(NULL);
    ck_assert_int_eq(smka_dns_write(etc, &dns), -EEXIST);
    ck_assert_int_le(time(NULL) - t0, 1);
    struct stat st;
    ck_assert_int_eq(lstat(path(etc, "resolv.conf"), &st), 0);
    ck_assert(S_ISFIFO(st.st_mode));
    ck_assert(no_temporaries(etc));
}
END_TEST

START_TEST(missing_etc_dir_is_enoent)
{
    ck_assert_int_eq(smka_dns_write(path(dir, "nonexistent"), &dns), -ENOENT);
}
END_TEST

/* In a mount namespace of this test's process: /etc is a fresh tmpfs whose
 * resolv.conf links out to a file on another tmpfs, and the default etc_dir
 * (NULL) is used. */
START_TEST(real_etc_in_a_mount_namespace)
{
    need_root();
    ck_assert_int_eq(unshare(CLONE_NEWNS), 0);
    ck_assert_int_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
    ck_assert_int_eq(mount("tmpfs", "/etc", "tmpfs", 0, "mode=0755"), 0);
    ck_assert_int_eq(mount("tmpfs", outside, "tmpfs", 0, "mode=0755"), 0);
    spit(path(outside, "resolv.conf"), "nameserver 127.0.0.53\n");
    ck_assert_int_eq(symlink(path(outside, "resolv.conf"), "/etc/resolv.conf"), 0);
    ck_assert_int_eq(smka_dns_write(NULL, &dns), 0);
    ck_assert(is_regular("/etc/resolv.conf"));
    ck_assert_str_eq(slurp("/etc/resolv.conf"), expected_resolv);
    ck_assert_str_eq(slurp(path(outside, "resolv.conf")), "nameserver 127.0.0.53\n");
    ck_assert(no_temporaries("/etc"));

    /* A file bind-mounted over resolv.conf (as a container runtime does)
     * cannot be renamed over: it is written in place, and stays mounted. */
    spit(path(outside, "bound"), "old\n");
    ck_assert_int_eq(mount(path(outside, "bound"), "/etc/resolv.conf", NULL, MS_BIND, NULL), 0);
    ck_assert_int_eq(smka_dns_write(NULL, &dns), 0);
    ck_assert_str_eq(slurp(path(outside, "bound")), expected_resolv);
    ck_assert(no_temporaries("/etc"));

    /* A read-only /etc is an error, not a silent no-op. */
    ck_assert_int_eq(umount("/etc/resolv.conf"), 0);
    ck_assert_int_eq(mount(NULL, "/etc", NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);
    ck_assert_int_eq(smka_dns_write(NULL, &dns), -EROFS);
    ck_assert_int_eq(umount("/etc"), 0);
    ck_assert_int_eq(umount(outside), 0);
}
END_TEST

/* --- host name ------------------------------------------------------------- */

START_TEST(hostname_sets_kernel_and_file)
{
    need_root();
    ck_assert_int_eq(unshare(CLONE_NEWUTS), 0); /* this test's process only */
    ck_assert_int_eq(symlink("../outside/hostname", path(etc, "hostname")), 0);
    spit(path(outside, "hostname"), "image-name\n");
    ck_assert_int_eq(smka_hostname_set(etc, "guest-7.example"), 0);
    struct utsname u;
    ck_assert_int_eq(uname(&u), 0);
    ck_assert_str_eq(u.nodename, "guest-7.example");
    ck_assert(is_regular(path(etc, "hostname")));
    ck_assert_str_eq(slurp(path(etc, "hostname")), "guest-7.example\n");
    ck_assert_str_eq(slurp(path(outside, "hostname")), "image-name\n");

    char longest[65];
    memset(longest, 'h', 64);
    longest[64] = '\0';
    ck_assert_int_eq(smka_hostname_set(etc, longest), 0);
    ck_assert_int_eq(uname(&u), 0);
    ck_assert_str_eq(u.nodename, longest);
}
END_TEST

START_TEST(hostname_rejects_bad_names_changing_nothing)
{
    need_root();
    ck_assert_int_eq(unshare(CLONE_NEWUTS), 0);
    ck_assert_int_eq(smka_hostname_set(etc, "before"), 0);
    char toolong[66];
    memset(toolong, 'h', 65);
    toolong[65] = '\0';
    const char *bad[] = {"", "-lead", ".lead", "a b", "a_b", "a\nb", "a/b", toolong};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(smka_hostname_set(etc, bad[i]) == -EINVAL, "accepted '%s'", bad[i]);
    ck_assert_int_eq(smka_hostname_set(etc, NULL), -EINVAL);
    struct utsname u;
    ck_assert_int_eq(uname(&u), 0);
    ck_assert_str_eq(u.nodename, "before");
    ck_assert_str_eq(slurp(path(etc, "hostname")), "before\n");
}
END_TEST

static int set_hostname_as_nobody(void)
{
    return smka_hostname_set(etc, "nobody-was-here");
}

START_TEST(hostname_failures_change_neither_kernel_nor_file)
{
    need_root();
    ck_assert_int_eq(unshare(CLONE_NEWUTS | CLONE_NEWNS), 0);
    ck_assert_int_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
    ck_assert_int_eq(smka_hostname_set(etc, "before"), 0);
    ck_assert_int_eq(chmod(dir, 0755), 0); /* mkdtemp's 0700 would stop nobody first */
    ck_assert_int_eq(as_nobody(set_hostname_as_nobody), -EPERM);
    ck_assert_str_eq(slurp(path(etc, "hostname")), "before\n");

    /* A read-only etc: the kernel's name is put back. */
    ck_assert_int_eq(mount(etc, etc, NULL, MS_BIND, NULL), 0);
    ck_assert_int_eq(mount(NULL, etc, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL), 0);
    ck_assert_int_eq(smka_hostname_set(etc, "after"), -EROFS);
    struct utsname u;
    ck_assert_int_eq(uname(&u), 0);
    ck_assert_str_eq(u.nodename, "before");
    ck_assert_str_eq(slurp(path(etc, "hostname")), "before\n");
    ck_assert_int_eq(umount(etc), 0);
}
END_TEST

/* --- /etc/hosts ------------------------------------------------------------ */

static const char base_hosts[] = "127.0.0.1\tlocalhost\n"
                                 "# a comment naming web 10.0.0.5\n"
                                 "::1\tlocalhost ip6-localhost ip6-loopback\n"
                                 "10.0.0.9 other   # web\n";

static ino_t inode_of(const char *p)
{
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    return st.st_ino;
}

START_TEST(hosts_entries_are_added_once)
{
    spit(path(etc, "hosts"), base_hosts);
    ck_assert_int_eq(chmod(path(etc, "hosts"), 0640), 0);
    const char *names[] = {"web", "db.internal"};
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", names, 2), 0);
    char want[1024];
    snprintf(want, sizeof(want), "%s10.0.0.5\tweb db.internal\n", base_hosts);
    ck_assert_str_eq(slurp(path(etc, "hosts")), want);

    /* Repeating it changes nothing, and does not even rewrite the file. */
    ino_t ino = inode_of(path(etc, "hosts"));
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", names, 2), 0);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", (const char *[]){"WEB"}, 1), 0);
    ck_assert_str_eq(slurp(path(etc, "hosts")), want);
    ck_assert_uint_eq(inode_of(path(etc, "hosts")), ino);

    /* Only the missing name is added; a repeated one only once. */
    const char *more[] = {"web", "cache", "cache"};
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", more, 3), 0);
    strcat(want, "10.0.0.5\tcache\n");
    ck_assert_str_eq(slurp(path(etc, "hosts")), want);

    /* Addresses compare as addresses: ::1 is 0:0::1. */
    ck_assert_int_eq(smka_hosts_add(etc, "0:0::1", (const char *[]){"ip6-localhost"}, 1), 0);
    /* "other" is listed for 10.0.0.9; "web" there is in a comment. */
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.9", (const char *[]){"other"}, 1), 0);
    ck_assert_str_eq(slurp(path(etc, "hosts")), want);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.9", (const char *[]){"web"}, 1), 0);
    strcat(want, "10.0.0.9\tweb\n");
    ck_assert_str_eq(slurp(path(etc, "hosts")), want);

    struct stat st;
    ck_assert_int_eq(stat(path(etc, "hosts"), &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640); /* the file's mode is kept */
    ck_assert(no_temporaries(etc));
}
END_TEST

START_TEST(hosts_missing_or_unterminated)
{
    ck_assert_int_eq(smka_hosts_add(etc, "2001:db8::5", (const char *[]){"v6host"}, 1), 0);
    ck_assert_str_eq(slurp(path(etc, "hosts")), "2001:db8::5\tv6host\n");
    spit(path(etc, "hosts"), "127.0.0.1 localhost");
    ck_assert_int_eq(smka_hosts_add(etc, "10.1.1.1", (const char *[]){"a"}, 1), 0);
    ck_assert_str_eq(slurp(path(etc, "hosts")), "127.0.0.1 localhost\n10.1.1.1\ta\n");
}
END_TEST

START_TEST(hosts_symlink_is_read_through_and_replaced)
{
    spit(path(outside, "hosts"), "127.0.0.1 localhost\n");
    ck_assert_int_eq(symlink("../outside/hosts", path(etc, "hosts")), 0);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", (const char *[]){"web"}, 1), 0);
    ck_assert(is_regular(path(etc, "hosts")));
    ck_assert_str_eq(slurp(path(etc, "hosts")), "127.0.0.1 localhost\n10.0.0.5\tweb\n");
    ck_assert_str_eq(slurp(path(outside, "hosts")), "127.0.0.1 localhost\n");

    /* A link to something that is not a regular file is neither opened nor
     * replaced. */
    ck_assert_int_eq(unlink(path(etc, "hosts")), 0);
    ck_assert_int_eq(mkfifo(path(outside, "fifo"), 0644), 0);
    ck_assert_int_eq(symlink("../outside/fifo", path(etc, "hosts")), 0);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", (const char *[]){"web"}, 1), -EEXIST);
}
END_TEST

/* Without /proc the link's file is opened by name and checked to be the
 * same: the contents are still carried over, never lost. */
START_TEST(hosts_symlink_without_proc)
{
    need_root();
    ck_assert_int_eq(unshare(CLONE_NEWNS), 0);
    ck_assert_int_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
    ck_assert_int_eq(mount("tmpfs", "/proc", "tmpfs", 0, NULL), 0);
    ck_assert_int_ne(access("/proc/self", F_OK), 0);
    spit(path(outside, "hosts"), "127.0.0.1 localhost\n");
    ck_assert_int_eq(symlink("../outside/hosts", path(etc, "hosts")), 0);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", (const char *[]){"web"}, 1), 0);
    ck_assert(is_regular(path(etc, "hosts")));
    ck_assert_str_eq(slurp(path(etc, "hosts")), "127.0.0.1 localhost\n10.0.0.5\tweb\n");
    ck_assert_str_eq(slurp(path(outside, "hosts")), "127.0.0.1 localhost\n");
    ck_assert_int_eq(umount("/proc"), 0);
}
END_TEST

START_TEST(hosts_over_the_size_limit_is_efbig)
{
    static char big[SMKA_HOSTS_MAX_SIZE + 2];
    memset(big, '#', sizeof(big) - 2);
    big[sizeof(big) - 2] = '\n';
    spit(path(etc, "hosts"), big);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", (const char *[]){"web"}, 1), -EFBIG);
    struct stat st;
    ck_assert_int_eq(stat(path(etc, "hosts"), &st), 0);
    ck_assert_int_eq(st.st_size, (off_t)sizeof(big) - 1);
    big[sizeof(big) - 3] = '\n';
    big[sizeof(big) - 2] = '\0'; /* exactly the limit */
    spit(path(etc, "hosts"), big);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", (const char *[]){"web"}, 1), 0);
}
END_TEST

START_TEST(hosts_bad_input_is_refused)
{
    spit(path(etc, "hosts"), base_hosts);
    const char *ok[] = {"web"};
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.256", ok, 1), -EINVAL);
    ck_assert_int_eq(smka_hosts_add(etc, "web", ok, 1), -EINVAL);
    ck_assert_int_eq(smka_hosts_add(etc, NULL, ok, 1), -EINVAL);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", ok, 0), -EINVAL);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", NULL, 1), -EINVAL);
    ck_assert_int_eq(smka_hosts_add(etc, "10.0.0.5", ok, SMKA_HOSTS_MAX_NAMES + 1), -EINVAL);
    const char *bad[] = {"a b", "a#b", "a\nb", "", "-x", "a\tb"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(smka_hosts_add(etc, "10.0.0.5", &bad[i], 1) == -EINVAL, "accepted '%s'",
                      bad[i]);
    ck_assert_str_eq(slurp(path(etc, "hosts")), base_hosts);
}
END_TEST

START_TEST(hosts_concurrent_adds_lose_nothing)
{
    spit(path(etc, "hosts"), "127.0.0.1 localhost\n");
    enum { N = 8 };
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        ck_assert_int_ge(pids[i], 0);
        if (pids[i] == 0) {
            char name[16];
            snprintf(name, sizeof(name), "node%d", i);
            const char *names[] = {name};
            int bad = 0;
            for (int k = 0; k < 20; k++)
                bad |= smka_hosts_add(etc, "10.0.0.5", names, 1) != 0;
            _exit(bad);
        }
    }
    for (int i = 0; i < N; i++) {
        int st;
        ck_assert_int_eq(waitpid(pids[i], &st, 0), pids[i]);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    const char *text = slurp(path(etc, "hosts"));
    for (int i = 0; i < N; i++) {
        char line[32];
        snprintf(line, sizeof(line), "10.0.0.5\tnode%d\n", i);
        const char *at = strstr(text, line);
        ck_assert_msg(at && !strstr(at + 1, line), "node%d not exactly once in:\n%s", i, text);
    }
    ck_assert(no_temporaries(etc));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("guestctl");
    TCase *tc = tcase_create("clock and entropy");
    tcase_add_test(tc, clock_rejects_bad_times);
    tcase_add_test(tc, clock_needs_cap_sys_time);
    tcase_add_test(tc, entropy_rejects_bad_arguments);
    tcase_add_test(tc, crng_is_reseeded_alone);
    tcase_add_test(tc, reseed_needs_cap_sys_admin);
    /* qemu-user has no translation for RNDADDENTROPY (its argument has a
     * variable length): it answers ENOSYS. The aarch64 code is the same C;
     * the boot tests run it in a real aarch64 guest. */
    if (getenv("SMK_TEST_QEMU_USER"))
        fprintf(stderr, "test-guestctl: under qemu-user: RNDADDENTROPY is tested in native "
                        "builds only\n");
    else {
        tcase_add_test(tc, entropy_is_added_and_the_crng_reseeded);
        tcase_add_test(tc, entropy_needs_cap_sys_admin);
    }
    suite_add_tcase(s, tc);

    tc = tcase_create("etc files");
    tcase_add_checked_fixture(tc, make_dirs, remove_dirs);
    tcase_add_test(tc, resolv_conf_is_written_whole);
    tcase_add_test(tc, resolv_conf_symlink_is_replaced_not_followed);
    tcase_add_test(tc, resolv_conf_bad_entries_are_refused);
    tcase_add_test(tc, resolv_conf_fifo_is_refused_at_once);
    tcase_add_test(tc, missing_etc_dir_is_enoent);
    tcase_add_test(tc, real_etc_in_a_mount_namespace);
    tcase_add_test(tc, hostname_sets_kernel_and_file);
    tcase_add_test(tc, hostname_rejects_bad_names_changing_nothing);
    tcase_add_test(tc, hostname_failures_change_neither_kernel_nor_file);
    tcase_add_test(tc, hosts_entries_are_added_once);
    tcase_add_test(tc, hosts_missing_or_unterminated);
    tcase_add_test(tc, hosts_symlink_is_read_through_and_replaced);
    tcase_add_test(tc, hosts_symlink_without_proc);
    tcase_add_test(tc, hosts_over_the_size_limit_is_efbig);
    tcase_add_test(tc, hosts_bad_input_is_refused);
    tcase_add_test(tc, hosts_concurrent_adds_lose_nothing);
    suite_add_tcase(s, tc);

    if (geteuid() != 0)
        fprintf(stderr, "test-guestctl: not root: most tests fail (they need root)\n");
    return run_suite(s, CK_ENV);
}
