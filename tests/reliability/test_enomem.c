/*
 * Out of memory is -ENOMEM, never "corrupt data" (-EBADMSG), from every call that decodes:
 * smk_decompress, smk_stream, smk_extract, smk_asset_path, smk_write_initramfs (and the
 * in-memory initramfs). Each runs in a forked child where allocations larger than 512 KiB fail
 * (the zstd window of the larger assets is 0.6-2 MiB), and, natively, once more under a real
 * RLIMIT_AS just above what the process already maps. Nothing may be written.
 *
 * The large allocations fail through malloc/calloc/realloc defined here (the library's and
 * libzstd's calls reach them first), or under AddressSanitizer, whose allocator cannot be
 * replaced, through ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=1 (set by
 * meson for this test). SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include <smkernel.h>

#include "../scratch.h"
#include "../run-suite.h"

#define LIMIT (512u * 1024)

#if !defined(__SANITIZE_ADDRESS__)
static bool limit_on;
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

void *malloc(size_t n)
{
    if (limit_on && n > LIMIT) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    if (limit_on && size && n > LIMIT / size) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    if (limit_on && n > LIMIT) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, n);
}

static void limit_allocations(void)
{
    limit_on = true;
}
#else
static void limit_allocations(void)
{
    /* Set for the whole process by ASAN_OPTIONS: prove it is in force. */
    void *volatile p = malloc(4u << 20);
    if (p) {
        free(p);
        _exit(99);
    }
}
#endif

static void setup(void)
{
    scratch_make("enomem");
}

static void teardown(void)
{
    scratch_remove();
}

static int ignore(void *ctx, const void *data, size_t len)
{
    (void)ctx;
    (void)data;
    (void)len;
    return 0;
}

enum call { DECOMPRESS, STREAM, EXTRACT, ASSET_PATH, INITRAMFS, INITRAMFS_BUF, N_CALLS };
static const char *const call_name[] = {"smk_decompress",      "smk_stream",
                                        "smk_extract",         "smk_asset_path",
                                        "smk_write_initramfs", "smk_write_initramfs_buf"};

static int run(enum call c, void *buf, size_t buf_size)
{
    char p[1024];
    size_t written;
    switch (c) {
    case DECOMPRESS:
        return smk_decompress(SMK_ASSET_KERNEL, buf, buf_size);
    case STREAM:
        return smk_stream(SMK_ASSET_KERNEL, ignore, NULL);
    case EXTRACT:
        return smk_extract(SMK_ASSET_KERNEL, at("kernel"), 0);
    case ASSET_PATH:
        return smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p);
    case INITRAMFS:
        return smk_write_initramfs(at("initrd"), NULL, 0, 0);
    case INITRAMFS_BUF:
        return smk_write_initramfs_buf(buf, buf_size, NULL, 0, &written);
    default:
        return -EINVAL;
    }
}

/* What the process maps now, in bytes (VmSize). */
static unsigned long long mapped(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %llu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

/* Each call in a child under the limit; the child's exit code carries -result. */
static void expect_enomem(bool rlimit_as)
{
    setenv("SMKERNEL_CACHE_DIR", at("cache"), 1);
    size_t buf_size = smk_asset_get(SMK_ASSET_KERNEL)->size + (64u << 20);
    for (int c = 0; c < N_CALLS; c++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            /* The output buffer exists before the limit (mapped, not allocated: the allocation
             * limit must not hit it): only the library's own memory is short. */
            void *buf =
                mmap(NULL, buf_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (buf == MAP_FAILED)
                _exit(98);
            memset(buf, 0, buf_size);
            if (rlimit_as) {
                unsigned long long now = mapped() + (1u << 20);
                struct rlimit rl = {now, now};
                if (now == (1u << 20) || setrlimit(RLIMIT_AS, &rl) != 0)
                    _exit(97);
            } else {
                limit_allocations();
            }
            int r = run((enum call)c, buf, buf_size);
            _exit(r >= 0 ? 0 : -r);
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status), "%s: killed by signal %d", call_name[c], WTERMSIG(status));
        int code = WEXITSTATUS(status);
        ck_assert_msg(code != 99 && code != 98 && code != 97, "%s: the limit could not be set up",
                      call_name[c]);
        ck_assert_msg(code == ENOMEM, "%s with %s: got -%d (%s), want -ENOMEM", call_name[c],
                      rlimit_as ? "RLIMIT_AS" : "large allocations failing", code,
                      smk_strerror(-code));
    }
    /* Nothing was published. */
    struct stat st;
    ck_assert_int_ne(lstat(at("kernel"), &st), 0);
    ck_assert_int_ne(lstat(at("initrd"), &st), 0);
    unsetenv("SMKERNEL_CACHE_DIR");
}

START_TEST(test_large_allocations_fail)
{
    expect_enomem(false);
}
END_TEST

#if !defined(__SANITIZE_ADDRESS__)
START_TEST(test_rlimit_as)
{
    expect_enomem(true);
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("enomem");
    TCase *tc = tcase_create("enomem");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_large_allocations_fail);
    /* AddressSanitizer reserves terabytes of shadow memory, and qemu-user its own guest space:
     * a real RLIMIT_AS runs natively without them (meson sets SMK_RLIMIT_AS there). */
#if !defined(__SANITIZE_ADDRESS__)
    if (getenv("SMK_RLIMIT_AS"))
        tcase_add_test(tc, test_rlimit_as);
#endif
    suite_add_tcase(s, tc);
    return run_suite(s, CK_NORMAL);
}
