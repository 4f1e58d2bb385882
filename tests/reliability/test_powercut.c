/*
 * Durability: what smk_extract() (and smk_write_initramfs(), smk_asset_path()) returned 0 for
 * survives a power cut. An ext4 image on a loop device is mounted; the calls return; at once
 * the file system is shut down with EXT4_IOC_SHUTDOWN and EXT4_GOING_FLAGS_NOLOGFLUSH (the
 * journal is not flushed: what was not on the disk is lost, as in a power cut); then it is
 * remounted (the journal replays) and every new file must be there, every replaced file new.
 * Needs root and a loop device; without them it fails, saying so. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <smkernel.h>

#ifndef EXT4_IOC_SHUTDOWN
#define EXT4_IOC_SHUTDOWN _IOR('X', 125, uint32_t)
#endif
#ifndef EXT4_GOING_FLAGS_NOLOGFLUSH
#define EXT4_GOING_FLAGS_NOLOGFLUSH 0x2
#endif

static char dir[256], img[300], mnt[300], loopdev[64];
static int failures;

static void fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "powercut: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    failures++;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "powercut: %s%s\n", what, detail);
    if (loopdev[0]) {
        umount(mnt);
        char cmd[400];
        snprintf(cmd, sizeof cmd, "losetup -d '%s'", loopdev);
        if (system(cmd) != 0)
            fprintf(stderr, "powercut: %s failed\n", cmd);
    }
    exit(1);
}

static char *in_mnt(const char *rel)
{
    static char buf[4][600];
    static int i;
    char *p = buf[i++ % 4];
    snprintf(p, 600, "%s/%s", mnt, rel);
    return p;
}

static void sh(const char *cmd)
{
    if (system(cmd) != 0)
        die("command failed: ", cmd);
}

static void mount_fs(void)
{
    if (mount(loopdev, mnt, "ext4", 0, NULL) != 0)
        die("mount failed: ", strerror(errno));
}

static void write_old(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs("old contents\n", f) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)
        die("cannot write ", path);
    fclose(f);
}

int main(void)
{
    if (geteuid() != 0)
        die("needs root (a loop device and mount): run the suite as root, as CI does", "");
    snprintf(dir, sizeof dir, "/tmp/smk-powercut-XXXXXX");
    if (!mkdtemp(dir))
        die("mkdtemp: ", strerror(errno));
    snprintf(img, sizeof img, "%s/fs.img", dir);
    snprintf(mnt, sizeof mnt, "%s/mnt", dir);
    if (mkdir(mnt, 0755) != 0)
        die("mkdir: ", strerror(errno));
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "truncate -s 128M '%s' && mkfs.ext4 -q -F '%s'", img, img);
    sh(cmd);
    snprintf(cmd, sizeof cmd, "losetup -f --show '%s'", img);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(loopdev, sizeof loopdev, p) || pclose(p) != 0)
        die("no loop device: 'losetup -f --show' failed; this test needs loop devices "
            "(modprobe loop, or a VM/container that has /dev/loop-control)",
            "");
    loopdev[strcspn(loopdev, "\n")] = '\0';
    mount_fs();

    /*
     * One power cut per call, right after it returns: every earlier fsync on the file system
     * commits the journal, and with it what the calls before did, so each call must be the
     * last thing before its own cut.
     */
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    const struct smk_asset *k = smk_asset_get(SMK_ASSET_KERNEL);
    const char *what[] = {"a new file", "a replaced file", "a file in new parent directories",
                          "a new initramfs"};
    for (int i = 0; i < 4; i++) {
        /* Durable before the cut: the old file to be replaced. */
        write_old(in_mnt("replaced"));
        sync();
        int r = i == 0   ? smk_extract(k->id, in_mnt("new"), 0)
                : i == 1 ? smk_extract(k->id, in_mnt("replaced"), 0)
                : i == 2 ? smk_extract(list[n - 1]->id, in_mnt("a/b/deep"), SMK_EXTRACT_PARENTS)
                         : smk_write_initramfs(in_mnt("initrd"), NULL, 0, 0);
        /* The power cut: nothing more reaches the disk, the journal is not flushed. */
        int fd = open(mnt, O_RDONLY | O_DIRECTORY);
        uint32_t flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        if (fd < 0 || ioctl(fd, EXT4_IOC_SHUTDOWN, &flags) != 0)
            die("EXT4_IOC_SHUTDOWN failed: ", strerror(errno));
        close(fd);
        if (umount(mnt) != 0)
            die("umount after shutdown: ", strerror(errno));
        mount_fs();
        struct stat st;
        int ok = r == 0 && (i == 0   ? smk_verify_file(k->id, in_mnt("new")) == 0
                            : i == 1 ? smk_verify_file(k->id, in_mnt("replaced")) == 0
                            : i == 2 ? smk_verify_file(list[n - 1]->id, in_mnt("a/b/deep")) == 0
                                     : stat(in_mnt("initrd"), &st) == 0 && st.st_size > 0);
        if (!ok)
            fail("%s is missing, old or wrong after a power cut right after the call "
                 "returned %s",
                 what[i], smk_strerror(r));
    }

    if (umount(mnt) != 0)
        fprintf(stderr, "powercut: umount: %s\n", strerror(errno));
    snprintf(cmd, sizeof cmd, "losetup -d '%s'; rm -rf '%s'", loopdev, dir);
    if (system(cmd) != 0)
        fprintf(stderr, "powercut: cleanup failed: %s\n", cmd);
    if (failures == 0)
        printf("powercut: a new, a replaced and a deep file and an initramfs, each present and "
               "new after EXT4_IOC_SHUTDOWN (no log flush) right after the call, and remount\n");
    return failures ? 1 : 0;
}
