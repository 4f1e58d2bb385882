#define _GNU_SOURCE
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int is_mountpoint(const char *path)
{
    char up[64];
    struct stat st, parent;
    snprintf(up, sizeof(up), "%s/..", path);
    if (stat(path, &st) < 0 || stat(up, &parent) < 0)
        return 0;
    return st.st_dev != parent.st_dev;
}

static void mount_missing(const char *source, const char *target, const char *type,
                          unsigned long flags, const char *data)
{
    if (is_mountpoint(target))
        return;
    if (mkdir(target, 0755) < 0 && errno != EEXIST) {
        smka_log("mkdir %s: %s", target, strerror(errno));
        return;
    }
    if (mount(source, target, type, flags, data) < 0)
        smka_log("mount %s on %s: %s", type, target, strerror(errno));
}

void smka_setup_system(void)
{
    mount_missing("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_missing("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_missing("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_missing("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666");
    /* A host's /tmp is rarely a mount point of its own, so "missing" means
     * unusable here: absent or read-only. */
    if (access("/tmp", W_OK) < 0) {
        if (mkdir("/tmp", 01777) < 0 && errno != EEXIST)
            smka_log("mkdir /tmp: %s", strerror(errno));
        else if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
            smka_log("mount tmpfs on /tmp: %s", strerror(errno));
    }
}

void smka_open_std_fds(void)
{
    /* Otherwise the first socket or pipe could land on 0-2 and receive
     * stray output meant for a console. */
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0)
            continue;
        int n = open("/dev/null", O_RDWR | O_NOCTTY);
        if (n >= 0 && n != fd) {
            dup2(n, fd);
            close(n);
        }
    }
}

void smka_power(uint32_t action)
{
    sync();
    /* Under qemu on x86 without ACPI a power-off just halts the CPU; only a
     * reboot (with -no-reboot and reboot=t) makes qemu exit, so that is the
     * default. */
    int cmd = action == SMK_SHUTDOWN_POWEROFF ? RB_POWER_OFF : RB_AUTOBOOT;
    if (reboot(cmd) < 0)
        smka_log("reboot: %s", strerror(errno));
}

static void reap_for(int ms)
{
    int64_t deadline = smka_now_ms() + ms;
    while (smka_now_ms() < deadline) {
        pid_t pid;
        while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
            ;
        if (pid < 0 && errno == ECHILD)
            return;
        smka_sleep_ms(20);
    }
}

void smka_pid1_shutdown(uint32_t action)
{
    /* Give processes a moment to write out their state before the kernel
     * goes down under them. */
    kill(-1, SIGTERM);
    reap_for(2000);
    kill(-1, SIGKILL);
    reap_for(500);
    smka_power(action);
}
