/*
 * The sub-library's API tests (Check). Identical in both per-arch subprojects; what differs
 * comes from the generated SMK_HAVE_* macros of the arch header. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <check.h>
#include <nettle/sha2.h>

#include SMK_ARCH_HEADER

static char tmp[256];

static void mk_tmp(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/smk-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp));
}

static void rm_tmp(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", tmp, tmp);
    ck_assert_int_eq(system(cmd), 0);
}

static char *at(const char *rel)
{
    static __thread char buf[4][1024];
    static __thread int i;
    char *p = buf[i++ % 4];
    snprintf(p, 1024, "%.255s/%.700s", tmp, rel);
    return p;
}

/* Names in dir that look like our temporaries: none may survive any call. */
static int count_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, ".smk-tmp-", 9) == 0;
    closedir(d);
    return n;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

static const struct smk_asset *largest(void)
{
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    const struct smk_asset *best = list[0];
    for (size_t i = 1; i < n; i++)
        if (list[i]->size > best->size)
            best = list[i];
    return best;
}

/* ---- descriptors ---- */

START_TEST(test_list_matches_arch)
{
    size_t n = 0;
    const struct smk_asset *const *list = smk_assets(&n);
    /* Which assets each arch ships is assets/registry.tsv's to say (tests/registry checks the
     * list against it); here the list, the lookups by id and the arch's own assets agree. */
    size_t shipped = 0;
    for (int id = 0; id < SMK_ASSET_ID_COUNT; id++)
        shipped += smk_asset_get((enum smk_asset_id)id) != NULL;
    ck_assert_uint_eq(n, shipped);
#if defined(SMK_HAVE_BUSYBOX)
    ck_assert_str_eq(smk_arch(), "x86_64");
    ck_assert_ptr_null(smk_asset_get(SMK_ASSET_SMPARK_KO));
    ck_assert_uint_eq(smk_asset_get(SMK_ASSET_BUSYBOX)->size, SMK_BUSYBOX_LEN);
    ck_assert_str_eq(smk_asset_get(SMK_ASSET_KERNEL)->file_name, "bzImage");
#else
    ck_assert_str_eq(smk_arch(), "aarch64");
    ck_assert_ptr_null(smk_asset_get(SMK_ASSET_BUSYBOX));
    ck_assert_uint_eq(smk_asset_get(SMK_ASSET_SMPARK_KO)->size, SMK_SMPARK_KO_LEN);
    ck_assert_str_eq(smk_asset_get(SMK_ASSET_KERNEL)->file_name, "Image");
#endif
    /* Both arches' /init. */
    ck_assert_uint_eq(smk_asset_get(SMK_ASSET_INIT_OCI)->size, SMK_INIT_OCI_LEN);
    ck_assert_ptr_null(list[n]);
    ck_assert_uint_eq(smk_asset_get(SMK_ASSET_KERNEL)->size, SMK_KERNEL_LEN);
    ck_assert_uint_eq(smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT)->size,
                      SMK_SUPERMACHINE_AGENT_LEN);
    for (size_t i = 0; i < n; i++) {
        const struct smk_asset *a = list[i];
        ck_assert_ptr_eq(smk_asset_get(a->id), a);
        ck_assert_ptr_eq(smk_asset_find(a->name), a);
        ck_assert_ptr_eq(smk_asset_find(a->file_name), a);
        ck_assert_uint_eq(strlen(a->sha256_hex), 64);
        ck_assert(a->mode == 0755 || a->mode == 0644);
        ck_assert(a->blob_size > 0 && a->blob_size < a->size);
        ck_assert(*a->version && *a->license && *a->source && *a->codec);
        if (i > 0)
            ck_assert_int_lt(list[i - 1]->id, a->id);
    }
    ck_assert_uint_eq(smk_asset_get(SMK_ASSET_KERNEL)->mode, 0644);
    ck_assert_uint_eq(smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT)->mode, 0755);
    ck_assert_ptr_null(smk_asset_get((enum smk_asset_id)SMK_ASSET_ID_COUNT));
    ck_assert_ptr_null(smk_asset_get((enum smk_asset_id) - 1));
    ck_assert_ptr_null(smk_asset_find("no-such-asset"));
    ck_assert_ptr_null(smk_asset_find(NULL));
    ck_assert_ptr_nonnull(smk_assets(NULL));
}
END_TEST

START_TEST(test_version_strings)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", SMK_VERSION_MAJOR, SMK_VERSION_MINOR,
             SMK_VERSION_PATCH);
    ck_assert_str_eq(smk_version(), want);
    ck_assert_str_eq(SMK_VERSION_STRING, want);
    ck_assert(strstr(smk_kernel_cmdline(), "console=") != NULL);
    ck_assert_str_eq(smk_strerror(0), "success");
    ck_assert_str_ne(smk_strerror(-EBADMSG), smk_strerror(-EINVAL));
    ck_assert_str_eq(smk_strerror(-99999), "unknown error");
    int errs[] = {EINVAL,  ENOENT, EISDIR,       ENOTDIR, EACCES, EPERM, ENOSPC, EBADMSG,
                  ENOBUFS, ERANGE, ENAMETOOLONG, ENOMEM,  EROFS,  EFBIG, EIO,    EDQUOT};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++)
        ck_assert_str_ne(smk_strerror(-errs[i]), "unknown error");
}
END_TEST

/* ---- decompression into memory ---- */

static void sha_of(const void *p, size_t n, unsigned char out[32])
{
    struct sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, n, p);
    sha256_digest(&c, 32, out);
}

START_TEST(test_decompress_every_asset)
{
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    for (size_t i = 0; i < n; i++) {
        const struct smk_asset *a = list[i];
        unsigned char *buf = malloc(a->size);
        ck_assert_ptr_nonnull(buf);
        ck_assert_int_eq(smk_decompress(a->id, buf, a->size), 0);
        unsigned char d[32];
        sha_of(buf, a->size, d);
        ck_assert_mem_eq(d, a->sha256, 32);
        free(buf);
    }
}
END_TEST

START_TEST(test_decompress_errors)
{
    const struct smk_asset *a = smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT);
    unsigned char *buf = malloc(a->size);
    memset(buf, 0xA5, a->size);
    ck_assert_int_eq(smk_decompress(a->id, buf, a->size - 1), -ENOBUFS);
    for (size_t i = 0; i < a->size; i++)
        ck_assert_uint_eq(buf[i], 0xA5); /* too small: nothing written */
    ck_assert_int_eq(smk_decompress(a->id, NULL, a->size), -EINVAL);
    ck_assert_int_eq(smk_decompress((enum smk_asset_id)42, buf, a->size), -EINVAL);
#if defined(SMK_HAVE_BUSYBOX)
    ck_assert_int_eq(smk_decompress(SMK_ASSET_SMPARK_KO, buf, a->size), -ENOENT);
#else
    ck_assert_int_eq(smk_decompress(SMK_ASSET_BUSYBOX, buf, a->size), -ENOENT);
#endif
    free(buf);
}
END_TEST

struct sink {
    size_t total, max_chunk, calls, stop_after;
};

static int sink_cb(void *ctx, const void *data, size_t len)
{
    struct sink *s = ctx;
    (void)data;
    s->total += len;
    s->calls++;
    if (len > s->max_chunk)
        s->max_chunk = len;
    return s->stop_after && s->calls >= s->stop_after ? -ECANCELED : 0;
}

START_TEST(test_stream)
{
    const struct smk_asset *a = largest();
    struct sink s = {0};
    ck_assert_int_eq(smk_stream(a->id, sink_cb, &s), 0);
    ck_assert_uint_eq(s.total, a->size);
    ck_assert_uint_le(s.max_chunk, 1u << 20);
    struct sink stop = {.stop_after = 1};
    ck_assert_int_eq(smk_stream(a->id, sink_cb, &stop), -ECANCELED);
    ck_assert_uint_eq(stop.calls, 1);
    ck_assert_int_eq(smk_stream(a->id, NULL, NULL), -EINVAL);
}
END_TEST

/* ---- extraction ---- */

START_TEST(test_extract_every_asset)
{
    mk_tmp();
    umask(077); /* the asset's mode is exact, whatever the umask */
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    for (size_t i = 0; i < n; i++) {
        const struct smk_asset *a = list[i];
        char *p = at(a->file_name);
        ck_assert_int_eq(smk_extract(a->id, p, 0), 0);
        ck_assert_int_eq(smk_verify_file(a->id, p), 0);
        struct stat st;
        ck_assert_int_eq(stat(p, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, a->mode);
        ck_assert_uint_eq((uint64_t)st.st_size, a->size);
    }
    umask(022);
    ck_assert_int_eq(count_temps(tmp), 0);
    rm_tmp();
}
END_TEST

START_TEST(test_extract_named_functions)
{
    mk_tmp();
    ck_assert_int_eq(smk_extract_kernel_to(at("k")), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_KERNEL, at("k")), 0);
    ck_assert_int_eq(smk_extract_kernel_to(at("d1/k")), -ENOENT);
    ck_assert_int_eq(smk_extract_kernel_to_with_parents(at("d1/d2/k")), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_KERNEL, at("d1/d2/k")), 0);
    ck_assert_int_eq(smk_extract_supermachine_agent_to(at("a")), 0);
    ck_assert_int_eq(smk_extract_supermachine_agent_to_with_parents(at("e/a")), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_SUPERMACHINE_AGENT, at("e/a")), 0);
    ck_assert_int_eq(smk_extract_init_oci_to(at("i")), 0);
    ck_assert_int_eq(smk_extract_init_oci_to(at("n1/i")), -ENOENT);
    ck_assert_int_eq(smk_extract_init_oci_to_with_parents(at("f/i")), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_INIT_OCI, at("f/i")), 0);
#if defined(SMK_HAVE_BUSYBOX)
    ck_assert_int_eq(smk_extract_busybox_to(at("b")), 0);
    ck_assert_int_eq(smk_extract_busybox_to_with_parents(at("f/g/b")), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_BUSYBOX, at("f/g/b")), 0);
#else
    ck_assert_int_eq(smk_extract_smpark_ko_to(at("m")), 0);
    ck_assert_int_eq(smk_extract_smpark_ko_to_with_parents(at("g/h/m")), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_SMPARK_KO, at("g/h/m")), 0);
#endif
    rm_tmp();
}
END_TEST

START_TEST(test_extract_overwrites)
{
    mk_tmp();
    write_text(at("k"), "old contents");
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_KERNEL, at("k")), -EBADMSG);
    ck_assert_int_eq(smk_extract(SMK_ASSET_KERNEL, at("k"), 0), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_KERNEL, at("k")), 0);
    rm_tmp();
}
END_TEST

START_TEST(test_extract_bad_arguments)
{
    mk_tmp();
    ck_assert_int_eq(smk_extract(SMK_ASSET_KERNEL, NULL, 0), -EINVAL);
    ck_assert_int_eq(smk_extract(SMK_ASSET_KERNEL, "", 0), -EINVAL);
    ck_assert_int_eq(smk_extract(SMK_ASSET_KERNEL, at("k"), 0x80), -EINVAL);
    ck_assert_int_eq(smk_extract((enum smk_asset_id)99, at("k"), 0), -EINVAL);
#if defined(SMK_HAVE_BUSYBOX)
    ck_assert_int_eq(smk_extract(SMK_ASSET_SMPARK_KO, at("k"), 0), -ENOENT);
#else
    ck_assert_int_eq(smk_extract(SMK_ASSET_BUSYBOX, at("k"), 0), -ENOENT);
#endif
    ck_assert_int_eq(access(at("k"), F_OK), -1);
    rm_tmp();
}
END_TEST

/*
 * A listing of everything under dir (name, type, size, mode, link target, mtime) to show that a
 * failed call wrote nothing anywhere, not only that the target is absent.
 */
static void snapshot_into(char *out, size_t size, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[2048], link[256] = "";
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0)
            continue;
        if (S_ISLNK(st.st_mode) && readlink(p, link, sizeof link - 1) < 0)
            link[0] = '\0';
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s %o %lld %ld.%09ld %s\n", p, (unsigned)st.st_mode,
                 (long long)st.st_size, (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, link);
        if (S_ISDIR(st.st_mode) && depth < 8)
            snapshot_into(out, size, p, depth + 1);
    }
    closedir(d);
}

static char *snapshot(void)
{
    size_t size = 1 << 16;
    char *s = calloc(1, size);
    snapshot_into(s, size, tmp, 0);
    return s;
}

/* smk_extract(kernel, path, flags) must fail with want and change nothing under tmp. */
static void fails_cleanly(const char *path, unsigned int flags, int want)
{
    char *before = snapshot();
    int r = smk_extract(SMK_ASSET_KERNEL, path, flags);
    char *after = snapshot();
    ck_assert_msg(r == want, "%s: got %d (%s), want %d", path, r, smk_strerror(r), want);
    ck_assert_msg(strcmp(before, after) == 0, "%s: files changed:\n%s---\n%s", path, before, after);
    free(before);
    free(after);
}

/* Each hostile or hopeless target has its documented errno and leaves every file as it was. */
START_TEST(test_extract_hostile_targets)
{
    mk_tmp();
    /* A directory, or a path spelled as one: -EISDIR. */
    ck_assert_int_eq(mkdir(at("dir"), 0755), 0);
    fails_cleanly(at("dir"), 0, -EISDIR);
    fails_cleanly(at("x/"), 0, -EISDIR);
    fails_cleanly(at("dir/.."), 0, -EISDIR);
    fails_cleanly(at("dir/."), SMK_EXTRACT_PARENTS, -EISDIR);
    /* A missing parent: -ENOENT, unless SMK_EXTRACT_PARENTS makes it (0755, like mkdir -p). */
    fails_cleanly(at("missing/k"), 0, -ENOENT);
    fails_cleanly(at("missing/deeper/k"), 0, -ENOENT);
    ck_assert_int_eq(smk_extract(SMK_ASSET_KERNEL, at("made/deeper/k"), SMK_EXTRACT_PARENTS), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_KERNEL, at("made/deeper/k")), 0);
    struct stat st;
    ck_assert_int_eq(stat(at("made/deeper"), &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    /* A parent that is a file: -ENOTDIR, with or without SMK_EXTRACT_PARENTS. */
    write_text(at("file"), "x");
    fails_cleanly(at("file/k"), 0, -ENOTDIR);
    fails_cleanly(at("file/k"), SMK_EXTRACT_PARENTS, -ENOTDIR);
    fails_cleanly(at("file/sub/k"), SMK_EXTRACT_PARENTS, -ENOTDIR);
    /* A symlink at the target is replaced, never followed: its target keeps its bytes. */
    write_text(at("victim"), "precious");
    ck_assert_int_eq(symlink(at("victim"), at("link")), 0);
    ck_assert_int_eq(smk_extract(SMK_ASSET_KERNEL, at("link"), 0), 0);
    ck_assert_int_eq(lstat(at("link"), &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_int_eq(stat(at("victim"), &st), 0);
    ck_assert_int_eq(st.st_size, 8);
    /* A dangling symlink is replaced too: nothing appears where it pointed. */
    ck_assert_int_eq(symlink(at("nowhere"), at("dangling")), 0);
    ck_assert_int_eq(smk_extract(SMK_ASSET_KERNEL, at("dangling"), 0), 0);
    ck_assert_int_eq(lstat(at("nowhere"), &st), -1);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_KERNEL, at("dangling")), 0);
    /* A symlink to a directory is a symlink, not a directory: replaced, the directory kept. */
    ck_assert_int_eq(symlink(at("dir"), at("dirlink")), 0);
    ck_assert_int_eq(smk_extract(SMK_ASSET_KERNEL, at("dirlink"), 0), 0);
    ck_assert_int_eq(lstat(at("dir"), &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    /* Special files are refused with -EEXIST, never opened (a FIFO would block) nor replaced. */
    ck_assert_int_eq(mkfifo(at("fifo"), 0644), 0);
    fails_cleanly(at("fifo"), 0, -EEXIST);
    ck_assert_int_eq(lstat(at("fifo"), &st), 0);
    ck_assert(S_ISFIFO(st.st_mode));
    if (geteuid() == 0) {
        ck_assert_int_eq(mknod(at("null"), S_IFCHR | 0666, makedev(1, 3)), 0);
        fails_cleanly(at("null"), 0, -EEXIST);
    }
    /* Too long: the whole path, or one component. */
    char *longp = malloc(5000);
    memset(longp, 'a', 4999);
    longp[4999] = '\0';
    fails_cleanly(longp, 0, -ENAMETOOLONG);
    fails_cleanly(longp, SMK_EXTRACT_PARENTS, -ENAMETOOLONG);
    free(longp);
    char name[400];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    fails_cleanly(at(name), 0, -ENAMETOOLONG);
    /* A symlink loop in the parent path. */
    ck_assert_int_eq(symlink(at("loop"), at("loop")), 0);
    fails_cleanly(at("loop/k"), 0, -ELOOP);
    ck_assert_int_eq(count_temps(tmp), 0);
    rm_tmp();
}
END_TEST

START_TEST(test_extract_all)
{
    mk_tmp();
    ck_assert_int_eq(smk_extract_all(at("missing"), 0), -ENOENT);
    ck_assert_int_eq(smk_extract_all(NULL, 0), -EINVAL);
    ck_assert_int_eq(smk_extract_all("", 0), -EINVAL);
    ck_assert_int_eq(smk_extract_all(tmp, 0x80), -EINVAL);
    write_text(at("file"), "x");
    ck_assert_int_eq(smk_extract_all(at("file/sub"), SMK_EXTRACT_PARENTS), -ENOTDIR);
    for (int round = 0; round < 2; round++) { /* new files, then replacing them */
        ck_assert_int_eq(smk_extract_all(at("all/deeper"), SMK_EXTRACT_PARENTS), 0);
        size_t n;
        const struct smk_asset *const *list = smk_assets(&n);
        for (size_t i = 0; i < n; i++) {
            char rel[300];
            snprintf(rel, sizeof rel, "all/deeper/%s", list[i]->file_name);
            ck_assert_int_eq(smk_verify_file(list[i]->id, at(rel)), 0);
            struct stat st;
            ck_assert_int_eq(stat(at(rel), &st), 0);
            ck_assert_uint_eq(st.st_mode & 07777, list[i]->mode);
        }
        ck_assert_int_eq(count_temps(at("all/deeper")), 0);
    }
    /* One asset that cannot be written: its error, and the others are still complete. */
    const struct smk_asset *k = smk_asset_get(SMK_ASSET_KERNEL);
    char rel[300];
    snprintf(rel, sizeof rel, "some/%s", k->file_name);
    ck_assert_int_eq(mkdir(at("some"), 0755), 0);
    ck_assert_int_eq(mkdir(at(rel), 0755), 0);
    ck_assert_int_eq(smk_extract_all(at("some"), 0), -EISDIR);
    snprintf(rel, sizeof rel, "some/%s", smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT)->file_name);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_SUPERMACHINE_AGENT, at(rel)), 0);
    rm_tmp();
}
END_TEST

/* Permission checks do not apply to root, so drop to nobody in a child to see EACCES. */
START_TEST(test_extract_unwritable_directory)
{
    mk_tmp();
    ck_assert_int_eq(mkdir(at("ro"), 0555), 0);
    ck_assert_int_eq(chmod(tmp, 0755), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(90);
        int r1 = smk_extract(SMK_ASSET_KERNEL, at("ro/k"), 0);
        int r2 = smk_extract(SMK_ASSET_KERNEL, at("ro/sub/k"), SMK_EXTRACT_PARENTS);
        _exit(r1 == -EACCES && r2 == -EACCES ? 0 : 91);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    ck_assert_int_eq(access(at("ro/k"), F_OK), -1);
    rm_tmp();
}
END_TEST

struct race {
    const char *path;
    int result;
};

static void *race_thread(void *arg)
{
    struct race *r = arg;
    r->result = 0;
    for (int i = 0; i < 4 && r->result == 0; i++)
        r->result = smk_extract(SMK_ASSET_SUPERMACHINE_AGENT, r->path, 0);
    return NULL;
}

START_TEST(test_extract_threads_one_path)
{
    mk_tmp();
    enum { N = 8 };
    pthread_t th[N];
    struct race r[N];
    /* One copy of the path for every thread: at()'s ring is reused after four calls. */
    char path[1024];
    snprintf(path, sizeof path, "%s", at("agent"));
    for (int i = 0; i < N; i++) {
        r[i].path = path;
        ck_assert_int_eq(pthread_create(&th[i], NULL, race_thread, &r[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(r[i].result, 0);
    }
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_SUPERMACHINE_AGENT, at("agent")), 0);
    ck_assert_int_eq(count_temps(tmp), 0);
    rm_tmp();
}
END_TEST

/* ---- verify ---- */

START_TEST(test_verify_file)
{
    mk_tmp();
    const struct smk_asset *a = smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT);
    ck_assert_int_eq(smk_extract(a->id, at("a"), 0), 0);
    ck_assert_int_eq(smk_verify_file(a->id, at("a")), 0);
    /* One flipped byte in the middle. */
    int fd = open(at("a"), O_RDWR);
    unsigned char c;
    ck_assert_int_eq(pread(fd, &c, 1, (off_t)a->size / 2), 1);
    c ^= 0xFF;
    ck_assert_int_eq(pwrite(fd, &c, 1, (off_t)a->size / 2), 1);
    ck_assert_int_eq(smk_verify_file(a->id, at("a")), -EBADMSG);
    ck_assert_int_eq(ftruncate(fd, (off_t)a->size - 1), 0);
    close(fd);
    ck_assert_int_eq(smk_verify_file(a->id, at("a")), -EBADMSG);
    ck_assert_int_eq(smk_verify_file(a->id, at("none")), -ENOENT);
    ck_assert_int_eq(smk_verify_file(a->id, tmp), -EISDIR);
    ck_assert_int_eq(mkfifo(at("fifo"), 0644), 0);
    ck_assert_int_eq(smk_verify_file(a->id, at("fifo")), -EBADMSG);
    ck_assert_int_eq(smk_verify_file(a->id, NULL), -EINVAL);
    ck_assert_int_eq(smk_verify_file(a->id, ""), -EINVAL);
    rm_tmp();
}
END_TEST

/* ---- cache ---- */

START_TEST(test_cache_dir_precedence)
{
    char buf[512];
    setenv("SMKERNEL_CACHE_DIR", "/x/explicit", 1);
    setenv("XDG_CACHE_HOME", "/x/xdg", 1);
    setenv("HOME", "/x/home", 1);
    ck_assert_int_eq(smk_cache_dir(buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "/x/explicit");
    unsetenv("SMKERNEL_CACHE_DIR");
    ck_assert_int_eq(smk_cache_dir(buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "/x/xdg/smkernel");
    setenv("XDG_CACHE_HOME", "relative", 1); /* ignored, as the XDG spec says */
    ck_assert_int_eq(smk_cache_dir(buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "/x/home/.cache/smkernel");
    ck_assert_int_eq(smk_cache_dir(buf, 4), -ERANGE);
    ck_assert_int_eq(smk_cache_dir(NULL, 4), -EINVAL);
}
END_TEST

START_TEST(test_asset_path_cold_then_warm)
{
    mk_tmp();
    setenv("SMKERNEL_CACHE_DIR", at("cache"), 1);
    char p1[1024], p2[1024];
    const struct smk_asset *a = smk_asset_get(SMK_ASSET_KERNEL);
    ck_assert_int_eq(smk_asset_path(a->id, p1, sizeof p1), 0);
    ck_assert(strncmp(p1, at("cache/"), strlen(at("cache/"))) == 0);
    ck_assert(strstr(p1, smk_version()) != NULL);
    ck_assert(strstr(p1, a->file_name) != NULL);
    ck_assert_int_eq(smk_verify_file(a->id, p1), 0);
    struct stat st1, st2;
    ck_assert_int_eq(stat(p1, &st1), 0);
    ck_assert_int_eq(stat(at("cache"), &st2), 0);
    ck_assert_uint_eq(st2.st_mode & 0777, 0700);
    /* Warm: same path, the very same file (not rewritten). */
    ck_assert_int_eq(smk_asset_path(a->id, p2, sizeof p2), 0);
    ck_assert_str_eq(p1, p2);
    ck_assert_int_eq(stat(p2, &st2), 0);
    ck_assert_uint_eq(st1.st_ino, st2.st_ino);
    ck_assert_int_eq(st1.st_mtime, st2.st_mtime);
    /* Too small a buffer. */
    ck_assert_int_eq(smk_asset_path(a->id, p2, 8), -ERANGE);
    ck_assert_int_eq(smk_asset_path(a->id, NULL, 8), -EINVAL);
    unsetenv("SMKERNEL_CACHE_DIR");
    rm_tmp();
}
END_TEST

START_TEST(test_asset_path_repairs_altered_file)
{
    mk_tmp();
    setenv("SMKERNEL_CACHE_DIR", at("cache"), 1);
    char p[1024];
    const struct smk_asset *a = smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT);
    ck_assert_int_eq(smk_asset_path(a->id, p, sizeof p), 0);
    int fd = open(p, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, "X", 1, 100), 1);
    close(fd);
    ck_assert_int_eq(smk_verify_file(a->id, p), -EBADMSG);
    ck_assert_int_eq(smk_asset_path(a->id, p, sizeof p), 0);
    ck_assert_int_eq(smk_verify_file(a->id, p), 0);
    /* A wrong mode is repaired too. */
    ck_assert_int_eq(chmod(p, 0700), 0);
    ck_assert_int_eq(smk_asset_path(a->id, p, sizeof p), 0);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, a->mode);
    unsetenv("SMKERNEL_CACHE_DIR");
    rm_tmp();
}
END_TEST

START_TEST(test_asset_path_refuses_untrusted_dir)
{
    mk_tmp();
    char p[1024];
    ck_assert_int_eq(mkdir(at("shared"), 0777), 0);
    ck_assert_int_eq(chmod(at("shared"), 0777), 0);
    setenv("SMKERNEL_CACHE_DIR", at("shared"), 1);
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), -EPERM);
    ck_assert_int_eq(chmod(at("shared"), 0770), 0); /* group-writable alone is refused too */
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), -EPERM);
    ck_assert_int_eq(chmod(at("shared"), 0702), 0);
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), -EPERM);
    DIR *d = opendir(at("shared"));
    int entries = 0;
    while (d && readdir(d))
        entries++;
    closedir(d);
    ck_assert_int_eq(entries, 2); /* refused, not used: nothing was written into it */
    ck_assert_int_eq(chmod(at("shared"), 0700), 0);
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), 0);
    /* A subdirectory loosened after the fact is refused on the warm path as well. */
    char *slash = strrchr(p, '/');
    *slash = '\0';
    ck_assert_int_eq(chmod(p, 0777), 0);
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), -EPERM);
    /* A root owned by another user: chown it when root, else use "/" (root's, not ours). */
    if (geteuid() == 0) {
        ck_assert_int_eq(mkdir(at("theirs"), 0700), 0);
        ck_assert_int_eq(chown(at("theirs"), 65534, 65534), 0);
        setenv("SMKERNEL_CACHE_DIR", at("theirs"), 1);
    } else {
        setenv("SMKERNEL_CACHE_DIR", "/", 1);
    }
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), -EPERM);
    /* A planted symlink below the root is refused, not followed. */
    setenv("SMKERNEL_CACHE_DIR", at("c2"), 1);
    ck_assert_int_eq(mkdir(at("c2"), 0700), 0);
    ck_assert_int_eq(mkdir(at("elsewhere"), 0700), 0);
    char sub[512];
    snprintf(sub, sizeof sub, "c2/%s-%s", smk_version(), smk_arch());
    ck_assert_int_eq(symlink(at("elsewhere"), at(sub)), 0);
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), -EPERM);
    unsetenv("SMKERNEL_CACHE_DIR");
    rm_tmp();
}
END_TEST

/* ---- initramfs ---- */

static int list_cpio(const char *path, char names[][128], int max)
{
    struct archive *ar = archive_read_new();
    archive_read_support_format_cpio(ar);
    ck_assert_int_eq(archive_read_open_filename(ar, path, 65536), ARCHIVE_OK);
    struct archive_entry *e;
    int n = 0;
    while (archive_read_next_header(ar, &e) == ARCHIVE_OK && n < max) {
        snprintf(names[n++], 128, "%s", archive_entry_pathname(e));
        ck_assert_int_eq(archive_entry_uid(e), 0);
        ck_assert_int_eq(archive_entry_mtime(e), 0);
    }
    archive_read_free(ar);
    return n;
}

static bool has(char names[][128], int n, const char *want)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], want) == 0)
            return true;
    return false;
}

START_TEST(test_initramfs_contents)
{
    mk_tmp();
    write_text(at("extra"), "hello");
    struct smk_initramfs_file extra[] = {
        {"/opt/tools/hello", at("extra"), NULL, 0, 0755},
        {"/etc/motd", NULL, "hi\n", 3, 0644},
    };
    ck_assert_int_eq(smk_write_initramfs(at("initrd"), extra, 2, 0), 0);
    static char names[128][128];
    int n = list_cpio(at("initrd"), names, 128);
    ck_assert(has(names, n, "init"));
    ck_assert(has(names, n, "sbin/supermachine-agent"));
    ck_assert(has(names, n, "dev/console"));
    ck_assert(has(names, n, "opt"));
    ck_assert(has(names, n, "opt/tools/hello"));
    ck_assert(has(names, n, "etc/motd"));
#if defined(SMK_HAVE_BUSYBOX)
    ck_assert(has(names, n, "bin/busybox"));
#else
    ck_assert(has(names, n, "lib/modules/smpark.ko"));
#endif
    /* Reproducible: the same inputs give the same bytes. */
    ck_assert_int_eq(smk_write_initramfs(at("initrd2"), extra, 2, 0), 0);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", at("initrd"), at("initrd2"));
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(count_temps(tmp), 0);
    rm_tmp();
}
END_TEST

START_TEST(test_initramfs_errors)
{
    mk_tmp();
    struct smk_initramfs_file rel = {"bin/x", NULL, "x", 1, 0755};
    struct smk_initramfs_file dots = {"/bin/../x", NULL, "x", 1, 0755};
    struct smk_initramfs_file nodata = {"/bin/x", NULL, NULL, 5, 0755};
    struct smk_initramfs_file missing = {"/bin/x", "/nonexistent/file", NULL, 0, 0755};
    ck_assert_int_eq(smk_write_initramfs(at("i"), &rel, 1, 0), -EINVAL);
    ck_assert_int_eq(smk_write_initramfs(at("i"), &dots, 1, 0), -EINVAL);
    ck_assert_int_eq(smk_write_initramfs(at("i"), &nodata, 1, 0), -EINVAL);
    ck_assert_int_eq(smk_write_initramfs(at("i"), NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(smk_write_initramfs(at("i"), NULL, 0, 0x40), -EINVAL);
    ck_assert_int_eq(smk_write_initramfs(at("i"), &missing, 1, 0), -ENOENT);
    ck_assert_int_eq(smk_write_initramfs(at("no/i"), NULL, 0, 0), -ENOENT);
    ck_assert_int_eq(smk_write_initramfs(at("no/i"), NULL, 0, SMK_EXTRACT_PARENTS), 0);
    ck_assert_int_eq(access(at("i"), F_OK), -1);
    ck_assert_int_eq(count_temps(tmp), 0);
    rm_tmp();
}
END_TEST

/* Guest paths whose entry the kernel would drop or put elsewhere, and names too long. */
START_TEST(test_initramfs_guest_paths)
{
    mk_tmp();
    const char *bad[] = {"/.",    "/a/.", "/..", "/a/..", "/a/../b", "/./a",
                         "/a//b", "/a/",  "/",   "",      "a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct smk_initramfs_file f = {bad[i], NULL, "x", 1, 0644};
        ck_assert_msg(smk_write_initramfs(at("i"), &f, 1, 0) == -EINVAL, "'%s' accepted", bad[i]);
        uint64_t size;
        ck_assert_int_eq(smk_initramfs_size(&f, 1, &size), -EINVAL);
    }
    char name[300] = "/d/";
    memset(name + 3, 'n', 256);
    name[3 + 256] = '\0';
    struct smk_initramfs_file f = {name, NULL, "x", 1, 0644};
    ck_assert_int_eq(smk_write_initramfs(at("i"), &f, 1, 0), -ENAMETOOLONG);
    name[3 + 255] = '\0'; /* 255 bytes: the longest name a file system takes */
    ck_assert_int_eq(smk_write_initramfs(at("i"), &f, 1, 0), 0);
    static char names[128][128];
    ck_assert_int_gt(list_cpio(at("i"), names, 128), 0);
    ck_assert_int_eq(count_temps(tmp), 0);
    rm_tmp();
}
END_TEST

/* cpio newc stores sizes in 32 bits: 4 GiB and more is -EFBIG (a sparse file costs nothing). */
START_TEST(test_initramfs_4gib)
{
    mk_tmp();
    int fd = open(at("huge"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)4 << 30), 0);
    close(fd);
    struct smk_initramfs_file f = {"/huge", at("huge"), NULL, 0, 0644};
    ck_assert_int_eq(smk_write_initramfs(at("i"), &f, 1, 0), -EFBIG);
    static const char byte = 'x';
    struct smk_initramfs_file m = {"/mem", NULL, &byte, (size_t)4 << 30, 0644};
    ck_assert_int_eq(smk_write_initramfs(at("i"), &m, 1, 0), -EFBIG);
    ck_assert_int_eq(access(at("i"), F_OK), -1);
    ck_assert_int_eq(count_temps(tmp), 0);
    rm_tmp();
}
END_TEST

/* The bytes of entry name in the archive at path (malloc'd), and their length. */
static unsigned char *cpio_entry(const char *path, const char *name, size_t *len)
{
    struct archive *ar = archive_read_new();
    archive_read_support_format_cpio(ar);
    ck_assert_int_eq(archive_read_open_filename(ar, path, 65536), ARCHIVE_OK);
    struct archive_entry *e;
    unsigned char *data = NULL;
    while (!data && archive_read_next_header(ar, &e) == ARCHIVE_OK) {
        if (strcmp(archive_entry_pathname(e), name) != 0)
            continue;
        *len = (size_t)archive_entry_size(e);
        data = malloc(*len + 1);
        ck_assert_int_eq(archive_read_data(ar, data, *len), (la_ssize_t)*len);
    }
    archive_read_free(ar);
    ck_assert_msg(data != NULL, "no %s in %s", name, path);
    return data;
}

/* A /proc file says its size is 0 but has content: the entry holds the content. */
START_TEST(test_initramfs_pseudo_file)
{
#ifdef __linux__
    mk_tmp();
    struct stat st;
    ck_assert_int_eq(stat("/proc/version", &st), 0);
    ck_assert_int_eq(st.st_size, 0);
    char want[4096];
    FILE *pf = fopen("/proc/version", "r");
    size_t want_len = fread(want, 1, sizeof want, pf);
    fclose(pf);
    ck_assert_uint_gt(want_len, 0);
    struct smk_initramfs_file f = {"/etc/host-version", "/proc/version", NULL, 0, 0644};
    ck_assert_int_eq(smk_write_initramfs(at("i"), &f, 1, 0), 0);
    size_t len;
    unsigned char *got = cpio_entry(at("i"), "etc/host-version", &len);
    ck_assert_uint_eq(len, want_len);
    ck_assert(memcmp(got, want, len) == 0);
    free(got);
    rm_tmp();
#endif
}
END_TEST

struct growbuf {
    unsigned char *p;
    size_t used, cap, calls, biggest;
    int fail_after; /* return -EPIPE on this call (1-based); 0 never */
};

static int grow_cb(void *ctx, const void *data, size_t len)
{
    struct growbuf *g = ctx;
    if (++g->calls == (size_t)g->fail_after)
        return -EPIPE;
    if (g->used + len > g->cap) {
        g->cap = (g->used + len) * 2;
        g->p = realloc(g->p, g->cap);
        ck_assert_ptr_nonnull(g->p);
    }
    memcpy(g->p + g->used, data, len);
    g->used += len;
    g->biggest = len > g->biggest ? len : g->biggest;
    return 0;
}

/* The in-memory initramfs: the size query exact, buffer and stream byte-for-byte the file. */
START_TEST(test_initramfs_in_memory)
{
    mk_tmp();
    write_text(at("extra"), "hello");
    struct smk_initramfs_file extra[] = {
        {"/opt/tools/hello", at("extra"), NULL, 0, 0755},
        {"/etc/motd", NULL, "hi\n", 3, 0644},
    };
    ck_assert_int_eq(smk_write_initramfs(at("initrd"), extra, 2, 0), 0);
    struct stat st;
    ck_assert_int_eq(stat(at("initrd"), &st), 0);
    unsigned char *file = malloc((size_t)st.st_size);
    FILE *f = fopen(at("initrd"), "rb");
    ck_assert_uint_eq(fread(file, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);

    uint64_t size = 0;
    ck_assert_int_eq(smk_initramfs_size(extra, 2, &size), 0);
    ck_assert_uint_eq(size, (uint64_t)st.st_size);

    unsigned char *buf = malloc((size_t)size + 1);
    size_t written = 0;
    ck_assert_int_eq(smk_write_initramfs_buf(buf, (size_t)size, extra, 2, &written), 0);
    ck_assert_uint_eq(written, size);
    ck_assert(memcmp(buf, file, (size_t)size) == 0);
    ck_assert_int_eq(smk_write_initramfs_buf(buf, (size_t)size - 1, extra, 2, &written), -ENOBUFS);

    struct growbuf g = {0};
    ck_assert_int_eq(smk_stream_initramfs(extra, 2, grow_cb, &g), 0);
    ck_assert_uint_eq(g.used, size);
    ck_assert(memcmp(g.p, file, (size_t)size) == 0);
    ck_assert_uint_le(g.biggest, 256 * 1024);
    free(g.p);
    struct growbuf stop = {.fail_after = 2};
    ck_assert_int_eq(smk_stream_initramfs(extra, 2, grow_cb, &stop), -EPIPE);
    free(stop.p);

    /* Bad input: the same errors as the file form. */
    ck_assert_int_eq(smk_initramfs_size(extra, 2, NULL), -EINVAL);
    ck_assert_int_eq(smk_initramfs_size(NULL, 1, &size), -EINVAL);
    ck_assert_int_eq(smk_write_initramfs_buf(NULL, 10, NULL, 0, &written), -EINVAL);
    ck_assert_int_eq(smk_write_initramfs_buf(buf, (size_t)size, NULL, 0, NULL), -EINVAL);
    ck_assert_int_eq(smk_stream_initramfs(NULL, 0, NULL, NULL), -EINVAL);
    struct smk_initramfs_file missing = {"/x", at("nonexistent"), NULL, 0, 0644};
    ck_assert_int_eq(smk_initramfs_size(&missing, 1, &size), -ENOENT);
    ck_assert_int_eq(smk_write_initramfs_buf(buf, (size_t)size, &missing, 1, &written), -ENOENT);
    free(buf);
    free(file);
    rm_tmp();
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("smkernel-" SMK_ARCH_NAME);
    struct {
        const char *name;
        const TTest *tests[12];
    } cases[] = {
        {"assets", {test_list_matches_arch, test_version_strings}},
        {"decompress", {test_decompress_every_asset, test_decompress_errors, test_stream}},
        {"extract",
         {test_extract_every_asset, test_extract_named_functions, test_extract_overwrites,
          test_extract_bad_arguments, test_extract_hostile_targets,
          test_extract_unwritable_directory, test_extract_threads_one_path, test_extract_all}},
        {"verify", {test_verify_file}},
        {"cache",
         {test_cache_dir_precedence, test_asset_path_cold_then_warm,
          test_asset_path_repairs_altered_file, test_asset_path_refuses_untrusted_dir}},
        {"initramfs",
         {test_initramfs_contents, test_initramfs_errors, test_initramfs_guest_paths,
          test_initramfs_4gib, test_initramfs_pseudo_file, test_initramfs_in_memory}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 120);
        for (size_t j = 0; j < 12 && cases[i].tests[j]; j++)
            tcase_add_test(tc, cases[i].tests[j]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
