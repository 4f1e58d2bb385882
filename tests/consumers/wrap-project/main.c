/*
 * Built by a Meson project that gets smkernel from its wrap: extracts the kernel and this
 * arch's own helpers into DIR, with the functions only this arch's header declares, and checks
 * each file with smk_verify_file(). SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include <smkernel.h>

static int failed;

static void check(const char *what, enum smk_asset_id id, int (*extract)(const char *),
                  const char *dir, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int rc = extract(path);
    if (rc != 0) {
        fprintf(stderr, "FAIL: %s(\"%s\"): %s\n", what, path, smk_strerror(rc));
        failed = 1;
        return;
    }
    rc = smk_verify_file(id, path);
    if (rc != 0) {
        fprintf(stderr, "FAIL: smk_verify_file(%s): %s\n", path, smk_strerror(rc));
        failed = 1;
        return;
    }
    printf("ok %s -> %s (verified, %llu bytes)\n", what, path,
           (unsigned long long)smk_asset_get(id)->size);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    printf("smkernel %s for %s, kernel command line \"%s\"\n", smk_version(), smk_arch(),
           smk_kernel_cmdline());
    if (strcmp(smk_arch(), WANT_ARCH) != 0) {
        fprintf(stderr, "FAIL: the library ships %s assets on a %s host\n", smk_arch(), WANT_ARCH);
        failed = 1;
    }
    check("smk_extract_kernel_to", SMK_ASSET_KERNEL, smk_extract_kernel_to, argv[1],
          smk_asset_get(SMK_ASSET_KERNEL)->file_name);
    check("smk_extract_supermachine_agent_to", SMK_ASSET_SUPERMACHINE_AGENT,
          smk_extract_supermachine_agent_to, argv[1], "supermachine-agent");
#if defined(SMK_HAVE_BUSYBOX)
    check("smk_extract_busybox_to", SMK_ASSET_BUSYBOX, smk_extract_busybox_to, argv[1], "busybox");
#endif
#if defined(SMK_HAVE_INIT_OCI)
    check("smk_extract_init_oci_to", SMK_ASSET_INIT_OCI, smk_extract_init_oci_to, argv[1],
          "init-oci");
#endif
#if defined(SMK_HAVE_SMPARK_KO)
    check("smk_extract_smpark_ko_to", SMK_ASSET_SMPARK_KO, smk_extract_smpark_ko_to, argv[1],
          "smpark.ko");
#endif
#if !defined(SMK_HAVE_BUSYBOX) && !defined(SMK_HAVE_INIT_OCI)
    fprintf(stderr, "FAIL: <smkernel.h> declares neither busybox nor init-oci\n");
    failed = 1;
#endif
    return failed;
}
