#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The consumer tests: smkernel used the ways a project outside this tree uses it.

  consumers.py release-tarball  the per-arch release tarball is reproducible, holds one arch,
                                configures, and remakes itself byte for byte once unpacked
  consumers.py wrap             a Meson project gets smkernel from that tarball as a wrap-file
  consumers.py pkgconfig        a program built with `cc $(pkg-config ... smkernel)` against an
                                installed smkernel (shared or static) extracts every asset
  consumers.py unsupported-arch a riscv64 configure, and a riscv64 compile of <smkernel.h>, stop
                                with the facade's words
  consumers.py sub-wrap         the per-arch sub-library as its own wrap (its own tarball),
                                `version: '>= 0.1'`, installed (shared and static) and run
  consumers.py examples         examples/: the C program and the CMake project against an
                                installed smkernel (with the install listing checked: license
                                files, manifest, man page), the Meson wrap project without Check

The wrap consumers run with check.pc hidden from pkg-config (PKG_CONFIG_LIBDIR holds every
other .pc file of the system), as on a machine without Check, and check that smkernel adds no
test and no agent, benchmark or fuzzer target to the consumer's build.

Each mode works in its own temporary directory, removed at the end (also on failure and when
`meson test` times out), and ends with PASS or with FAIL lines that say what broke.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

UNSUPPORTED = ("smkernel supports only aarch64 (HVF) and x86_64 (KVM) hosts; no guest kernel is "
               "bundled for this cpu family")
ARCHES = ("x86_64", "aarch64")
KERNEL_FILE = {"x86_64": "bzImage", "aarch64": "Image"}

problems = []


class Fatal(Exception):
    """A step failed and the ones after it cannot run."""


def say(msg=""):
    print(msg, flush=True)


def problem(msg):
    problems.append(msg)
    say(f"FAIL: {msg}")


def run(cmd, what, env=None, expect_fail=False):
    """Run cmd, print it and how it went; a failure (or, with expect_fail, a success) is fatal
    and prints the command's whole output. Returns the output (stdout and stderr together)."""
    shown = " ".join(str(c) for c in cmd)
    start = time.monotonic()
    try:
        p = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        raise Fatal(f"{what}: cannot run {cmd[0]}: {e}")
    took = time.monotonic() - start
    say(f"$ {shown}\n  -> exit {p.returncode} in {took:.1f} s")
    if (p.returncode == 0) == expect_fail:
        say("  " + p.stdout.rstrip().replace("\n", "\n  "))
        if expect_fail:
            raise Fatal(f"{what}: succeeded, but it must fail")
        raise Fatal(f"{what}: exit status {p.returncode} (output above)")
    return p.stdout


def release_tarball(tool, arch, src, outdir):
    """Run tools/release-tarball; returns the tarball's path."""
    out = run([sys.executable, tool, arch, outdir, src], f"tools/release-tarball {arch}")
    say("  " + out.rstrip().replace("\n", "\n  "))
    paths = [l for l in out.splitlines() if l.endswith(".tar.xz") and os.path.isfile(l)]
    if len(paths) != 1:
        raise Fatal("tools/release-tarball did not print the path of the tarball it wrote")
    return paths[0]


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def version_of(src):
    text = ""
    for arch in ARCHES:
        header = os.path.join(src, "subprojects", f"smkernel-{arch}", "include",
                              "smkernel-common.h")
        if os.path.isfile(header):
            text = read_file(header).decode()
            break
    parts = [re.search(rf"#define SMK_VERSION_{p} (\d+)", text)
             for p in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise Fatal(f"no SMK_VERSION_* in subprojects/smkernel-*/include/smkernel-common.h "
                    f"of {src}")
    return ".".join(m.group(1) for m in parts)


def unpack(tarball, dest):
    with tarfile.open(tarball) as t:
        if hasattr(tarfile, "data_filter"):
            t.extractall(dest, filter="data")
        else:
            t.extractall(dest)


# --- release-tarball -------------------------------------------------------------------------

def check_members(tarball, arch, version):
    other = [a for a in ARCHES if a != arch][0]
    top = f"smkernel-{version}"
    with tarfile.open(tarball) as t:
        members = t.getmembers()
    names = [m.name for m in members]
    say(f"  {len(names)} members, {sum(m.size for m in members)} bytes unpacked")
    if names != sorted(names):
        problem("the members are not sorted by name")
    if any(n != top and not n.startswith(top + "/") for n in names):
        problem(f"members outside the top directory {top}/: "
                + ", ".join(n for n in names if not n.startswith(top))[:300])
    rel = {n[len(top) + 1:] for n in names if n.startswith(top + "/")}
    for want in ["LICENSE", "facade/smkernel.1", "examples/minimal/main.c",
                 "meson.build", "meson_options.txt", "facade/meson.build", "include/smkernel.h",
                 "tools/release-tarball", "tests/meson.build", "subprojects/sync-shared",
                 f"cross/{other}-linux-gnu.txt", f"subprojects/smkernel-{arch}/meson.build",
                 f"subprojects/smkernel-{arch}/blobs/MANIFEST.tsv",
                 f"subprojects/smkernel-{arch}/blobs/kernel.cmdline"]:
        if want not in rel:
            problem(f"{want} is missing from the tarball")
    if not any(r.startswith("assets/") for r in rel):
        problem("assets/ (the sources and configs of the blobs) is missing from the tarball")
    for bad, why in [(f"subprojects/smkernel-{other}", f"the {other} sub-library"),
                     ("assets/.work", "the asset build's scratch directory"),
                     (".git", "git's repository")]:
        leaked = [r for r in rel if r == bad or r.startswith(bad + "/")]
        if leaked:
            problem(f"{why} is in the tarball: {', '.join(sorted(leaked)[:5])}")
    builds = sorted(r for r in rel if r.endswith("/meson-private") or "/meson-private/" in r)
    if builds:
        problem(f"a build directory is in the tarball: {builds[0]}")
    owners = {(m.uid, m.gid, m.uname, m.gname) for m in members}
    if owners != {(0, 0, "", "")}:
        problem(f"owners are not all 0/0 without names: {sorted(owners)}")
    mtimes = {m.mtime for m in members}
    if len(mtimes) != 1:
        problem(f"{len(mtimes)} different mtimes, want one")
    modes = {oct(m.mode) for m in members}
    if not modes <= {"0o644", "0o755"}:
        problem(f"modes other than 0644/0755: {sorted(modes)}")


def mode_release_tarball(a, tmp):
    version = version_of(a.source)
    say(f"== the {a.arch} release tarball of {a.source} (smkernel {version})")
    first = release_tarball(a.tool, a.arch, a.source, os.path.join(tmp, "out1"))
    check_members(first, a.arch, version)

    say("\n== made again: the same bytes")
    again = release_tarball(a.tool, a.arch, a.source, os.path.join(tmp, "out2"))
    if read_file(first) != read_file(again):
        problem("two runs of tools/release-tarball on the same tree wrote different tarballs")

    say("\n== unpacked, it remakes itself (no .git there: tools/release-tarball lists the files)")
    unpacked = os.path.join(tmp, "unpacked")
    unpack(first, unpacked)
    tree = os.path.join(unpacked, f"smkernel-{version}")
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    out = run([sys.executable, os.path.join(tree, "tools", "release-tarball"), a.arch,
               os.path.join(tmp, "out3")], "tools/release-tarball from the unpacked tarball",
              env=env)
    say("  " + out.rstrip().replace("\n", "\n  "))
    remade = os.path.join(tmp, "out3", os.path.basename(first))
    if not os.path.isfile(remade) or read_file(remade) != read_file(first):
        problem("the tarball remade from the unpacked tarball differs from the tarball")

    say("\n== the unpacked tarball configures as a project of its own, with its default options")
    setup = [a.meson, "setup", os.path.join(tmp, "build"), tree]
    if a.cross_file:
        setup += ["--cross-file", os.path.join(tree, a.cross_file)]
    log = run(setup, "meson setup of the unpacked tarball")
    other = [x for x in ARCHES if x != a.arch][0]
    if f"smkernel-{a.arch}: YES" not in log:
        problem(f"meson setup did not report the subproject smkernel-{a.arch}")
    if f"smkernel-{other}" in log:
        problem(f"meson setup mentions smkernel-{other}, which the tarball does not hold")


# --- wrap ------------------------------------------------------------------------------------

def without_check(tmp):
    """An environment whose pkg-config sees every system .pc file but check.pc."""
    pkgconf = os.environ.get("PKG_CONFIG", "pkg-config").split()
    path = run(pkgconf + ["--variable", "pc_path", "pkg-config"], "pkg-config pc_path").strip()
    libdir = os.path.join(tmp, "pkgconfig-without-check")
    os.makedirs(libdir, exist_ok=True)
    for d in path.split(os.pathsep) + os.environ.get("PKG_CONFIG_PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for f in os.listdir(d):
            if f.endswith(".pc") and f != "check.pc" and not os.path.exists(
                    os.path.join(libdir, f)):
                os.symlink(os.path.join(d, f), os.path.join(libdir, f))
    env = dict(os.environ, PKG_CONFIG_LIBDIR=libdir)
    env.pop("PKG_CONFIG_PATH", None)
    if subprocess.run(pkgconf + ["--exists", "check"], env=env).returncode == 0:
        raise Fatal("check.pc is still visible with PKG_CONFIG_LIBDIR=" + libdir)
    say(f"  pkg-config without check.pc: PKG_CONFIG_LIBDIR={libdir}")
    return env


def only_own_build(a, build, own_tests, env, sub_library=False):
    """The consumer's `meson test --list` holds its own tests only, and its build no target of
    smkernel's tests: no agent, benchmark, fuzzer, test program or CLI, and (under the facade)
    no libsmkernel-<arch>.so beside libsmkernel; sub_library: the consumer links that one."""
    # `meson test --list` exits 1 with "No tests defined." when there are none.
    p = subprocess.run([a.meson, "test", "-C", build, "--list"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    listed = p.stdout
    if p.returncode != 0 and "No tests defined" not in listed:
        raise Fatal(f"meson test --list: exit {p.returncode}:\n{listed}")
    tests = sorted(l.strip().split(" / ")[-1] for l in listed.splitlines()
                   if l.strip() and "No tests defined" not in l and not l.startswith("ninja:"))
    say(f"  meson test --list: {' '.join(tests) or '(none)'}")
    if tests != sorted(own_tests):
        problem(f"the consumer's tests are {tests}, want only its own {sorted(own_tests)}")
    targets = run(["ninja", "-C", build, "-t", "targets", "all"], "ninja -t targets", env=env)
    # benchmark, test, meson-*: Meson's own phony targets, in every build.
    names = [l.split(":")[0] for l in targets.splitlines()
             if l.split(":")[0] not in ("benchmark", "test")]
    if sub_library:
        names = [n for n in names if not re.search(r"/libsmkernel-(x86_64|aarch64)\.so[.\d]*$", n)]
    bad = sorted(n for n in names if re.search(
        r"(^|/)(supermachine-agent[\w-]*|test-[\w-]+|bench[\w-]*|fuzz[\w-]*|smkernel|"
        r"libsmkernel-(x86_64|aarch64)\.so[.\d]*)$", n))
    say(f"  ninja targets: {len(names)}; of smkernel's tests, agent, benches, fuzzers, CLI: "
        f"{' '.join(bad) or 'none'}")
    if bad:
        problem(f"the consumer's build holds smkernel targets it does not need: {bad[:8]}")

def mode_wrap(a, tmp):
    version = version_of(a.source)
    say(f"== the {a.arch} release tarball of {a.source}")
    tarball = release_tarball(a.tool, a.arch, a.source, os.path.join(tmp, "release"))
    digest = hashlib.sha256(read_file(tarball)).hexdigest()

    say("\n== a copy of tests/consumers/wrap-project with subprojects/smkernel.wrap; the tarball"
        " waits in subprojects/packagecache/ and the source_url does not resolve")
    proj = os.path.join(tmp, "wrap-project")
    shutil.copytree(a.project, proj)
    subprojects = os.path.join(proj, "subprojects")
    os.makedirs(os.path.join(subprojects, "packagecache"))
    shutil.copy(tarball, os.path.join(subprojects, "packagecache"))
    name = os.path.basename(tarball)
    wrap = (f"[wrap-file]\ndirectory = smkernel-{version}\n"
            f"source_url = https://releases.smkernel.invalid/{version}/{name}\n"
            f"source_filename = {name}\nsource_hash = {digest}\n\n"
            "[provide]\ndependency_names = smkernel\n")
    with open(os.path.join(subprojects, "smkernel.wrap"), "w") as f:
        f.write(wrap)
    say("  " + wrap.rstrip().replace("\n", "\n  "))

    say("\n== meson setup without Check: nothing to download, smkernel from the wrap even if one "
        "is installed")
    env = without_check(tmp)
    build = os.path.join(tmp, "build")
    log = run([a.meson, "setup", build, proj, "--wrap-mode=nodownload",
               "--force-fallback-for=smkernel"], "meson setup of the wrap consumer", env=env)
    for line in log.splitlines():
        if re.search(r"smkernel source from cache|Executing subproject|Dependency smkernel", line):
            say("  | " + line.strip())
    if not re.search(r"Dependency smkernel found: YES \S+ \(overridden\)", log):
        problem("Meson did not report `Dependency smkernel found: YES <version> (overridden)`: "
                "the facade's meson.override_dependency() was not used")

    unpacked = os.path.join(subprojects, f"smkernel-{version}")
    other = [x for x in ARCHES if x != a.arch][0]
    nested = os.path.join(unpacked, "subprojects")
    have = sorted(os.listdir(nested)) if os.path.isdir(nested) else []
    say(f"  {os.path.relpath(nested, proj)}/: {' '.join(have)}")
    if f"smkernel-{a.arch}" not in have:
        problem(f"the unpacked wrap has no subprojects/smkernel-{a.arch}")
    if f"smkernel-{other}" in have:
        problem(f"the unpacked wrap holds smkernel-{other}: a consumer downloads both arches")
    promoted = sorted(d for d in os.listdir(subprojects) if d.startswith("smkernel-")
                      and d != f"smkernel-{version}")
    if promoted:
        problem(f"subprojects/{promoted[0]} appeared next to the wrap: it was promoted, not "
                "found nested")

    info = json.loads(run([a.meson, "introspect", "--projectinfo", build], "meson introspect"))
    subs = sorted(s["name"] for s in info.get("subprojects", []))
    say(f"  subprojects configured: {', '.join(subs)}")
    if subs != sorted(["smkernel", f"smkernel-{a.arch}"]):
        problem(f"configured subprojects are {subs}, want smkernel and smkernel-{a.arch} only")
    files = json.loads(run([a.meson, "introspect", "--buildsystem-files", build],
                           "meson introspect"))
    want = os.path.join(nested, f"smkernel-{a.arch}", "meson.build")
    if not any(os.path.exists(f) and os.path.samefile(f, want) for f in files):
        problem(f"Meson did not read {os.path.relpath(want, proj)}: the nested subproject was "
                "not used from inside the unpacked wrap")

    say("\n== build and run the consumer")
    run([a.meson, "compile", "-C", build], "meson compile of the wrap consumer", env=env)
    only_own_build(a, build, [], env)
    outdir = os.path.join(tmp, "assets")
    os.mkdir(outdir)
    out = run([os.path.join(build, "wrap-consumer"), outdir], "the wrap consumer program")
    say("  " + out.rstrip().replace("\n", "\n  "))
    if not os.path.isfile(os.path.join(outdir, KERNEL_FILE[a.arch])):
        problem(f"the consumer left no {KERNEL_FILE[a.arch]} in {outdir}")


# --- pkg-config ------------------------------------------------------------------------------

def requires(pkgconf, env):
    """The packages smkernel.pc requires, publicly or privately. Meson writes a shared
    libsmkernel's libarchive and nettle as Requires.private and a static-only one's as Requires,
    so that `pkg-config --libs` alone links it."""
    names = []
    for kind in ("--print-requires", "--print-requires-private"):
        out = run(pkgconf + [kind, "smkernel"], f"pkg-config {kind}", env=env)
        names += [l.split()[0] for l in out.splitlines() if l.strip()]
    return names


def drop_unlinkable(flags, cc, own, reqs):
    """--static also lists what libarchive.pc's Libs.private names (-lacl -lzstd -llz4 ...), for
    linking libarchive statically. libarchive and nettle link dynamically here and bring those
    along themselves, and Debian's libarchive-dev does not install their .so/.a links: leave
    out the ones the linker cannot find, but never -lsmkernel nor the Libs of a package that
    smkernel.pc requires."""
    libdirs = [f[2:] for f in flags if f.startswith("-L")]

    def findable(flag):
        for suffix in (".so", ".a"):
            lib = f"lib{flag[2:]}{suffix}"
            if any(os.path.exists(os.path.join(d, lib)) for d in libdirs):
                return True
            found = subprocess.run(cc + [f"-print-file-name={lib}"], capture_output=True,
                                   text=True).stdout.strip()
            if found != lib:
                return True
        return False

    dropped = [f for f in flags if f.startswith("-l") and f not in own and not findable(f)]
    if dropped:
        say(f"  note: left out {' '.join(dropped)}: not installed as development files, and only "
            f"needed to link {' and '.join(reqs)} statically, which this link does not do")
    return [f for f in flags if f not in dropped]


def mode_pkgconfig(a, tmp):
    version = version_of(a.source)
    soversion = version.split(".")[0] if not version.startswith("0.") else \
        ".".join(version.split(".")[:2])
    say(f"== install smkernel ({a.library}) under a DESTDIR")
    build, dest = os.path.join(tmp, "build"), os.path.join(tmp, "destdir")
    run([a.meson, "setup", build, a.source, "--prefix=/usr", "-Dtests=false",
         f"-Ddefault_library={a.library}"], "meson setup of smkernel")
    run([a.meson, "compile", "-C", build], "meson compile of smkernel")
    run([a.meson, "install", "-C", build, "--destdir", dest, "--quiet"], "meson install")

    pcs = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs if f == "smkernel.pc"]
    if len(pcs) != 1:
        raise Fatal(f"{len(pcs)} smkernel.pc under the DESTDIR, want 1")
    pcdir = os.path.dirname(pcs[0])
    libdir = os.path.dirname(pcdir)
    say(f"  {os.path.relpath(pcs[0], dest)}:")
    say("  | " + read_file(pcs[0]).decode().strip().replace("\n", "\n  | "))

    incdir = os.path.join(dest, "usr", "include")
    headers = sorted(os.path.relpath(os.path.join(d, f), incdir)
                     for d, _, fs in os.walk(incdir) for f in fs)
    want = sorted(["smkernel.h", "smkernel-common.h", "smkernel-agent.h",
                   "smkernel-agent-restore.h", f"smkernel-{a.arch}.h",
                   f"smkernel-{a.arch}-assets.h"])
    say(f"  headers: {' '.join(headers)}")
    if headers != want:
        problem(f"installed headers are {headers}, want exactly {want}")
    libs = sorted(f for f in os.listdir(libdir) if f.startswith("libsmkernel"))
    say(f"  {os.path.relpath(libdir, dest)}: {' '.join(libs)}")
    if a.library == "shared" and (f"libsmkernel.so.{soversion}" not in libs
                                  or "libsmkernel.a" in libs):
        problem(f"a shared install wants libsmkernel.so.{soversion} and no libsmkernel.a")
    if a.library == "static" and (libs != ["libsmkernel.a"]):
        problem(f"a static install wants libsmkernel.a only, not {libs}")

    say("\n== pkg-config sees the installed smkernel.pc (PKG_CONFIG_SYSROOT_DIR=DESTDIR) and "
        "the system's libarchive.pc and nettle.pc")
    env = dict(os.environ)
    env.pop("PKG_CONFIG_PATH", None)
    pkgconf = os.environ.get("PKG_CONFIG", "pkg-config").split()
    system_path = run(pkgconf + ["--variable", "pc_path", "pkg-config"],
                      "pkg-config --variable pc_path").strip()
    env["PKG_CONFIG_LIBDIR"] = os.pathsep.join([pcdir, system_path])
    env["PKG_CONFIG_SYSROOT_DIR"] = dest
    modversion = run(pkgconf + ["--modversion", "smkernel"], "pkg-config --modversion",
                     env=env).strip()
    say(f"  --modversion: {modversion}")
    if modversion != version:
        problem(f"smkernel.pc says Version: {modversion}, the library is {version}: "
                f"`dependency('smkernel', version: '>= {version}')` fails against this install")
    reqs = requires(pkgconf, env)
    say(f"  requires: {' '.join(reqs)}")
    for want in ("libarchive", "nettle"):
        if want not in reqs:
            problem(f"smkernel.pc does not require {want}: a static libsmkernel would not link")
    own = ["-lsmkernel"] + run(pkgconf + ["--libs-only-l"] + reqs, "pkg-config --libs-only-l",
                               env=env).split()
    static = ["--static"] if a.library == "static" else []
    flags = run(pkgconf + ["--cflags", "--libs"] + static + ["smkernel"],
                "pkg-config --cflags --libs", env=env).split()
    say(f"  flags: {' '.join(flags)}")
    if a.library == "static":
        for lib in ("-larchive", "-lnettle"):
            if lib not in flags:
                problem(f"`pkg-config --static --libs smkernel` lacks {lib}")

    say("\n== build the consumer with those flags, and run it")
    exe = os.path.join(tmp, "pkgconfig-consumer")
    cc = os.environ.get("CC", "cc").split()
    if a.library == "static":
        flags = drop_unlinkable(flags, cc, own, reqs)
    # -Werror: smkernel's headers must not warn in a consumer's strict build.
    run(cc + ["-Wall", "-Wextra", "-Wpedantic", "-Werror", a.consumer, "-o", exe]
        + flags, "compiling pkgconfig-consumer.c")
    dynamic = run(["readelf", "-d", "-W", exe], "readelf -d")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    say(f"  NEEDED: {' '.join(needed)}")
    run_env = dict(os.environ)
    if a.library == "shared":
        if f"libsmkernel.so.{soversion}" not in needed:
            problem(f"the consumer does not depend on libsmkernel.so.{soversion}")
        run_env["LD_LIBRARY_PATH"] = libdir
        resolved = [l.strip() for l in run(["ldd", exe], "ldd", env=run_env).splitlines()
                    if "libsmkernel" in l]
        say(f"  ldd: {' '.join(resolved)}")
        if not resolved or libdir not in resolved[0]:
            problem(f"libsmkernel does not resolve into {libdir}")
    elif any(n.startswith("libsmkernel") for n in needed):
        problem("the statically linked consumer still needs a shared libsmkernel")
    outdir = os.path.join(tmp, "assets")
    os.mkdir(outdir)
    out = run([exe, outdir], "the pkg-config consumer program", env=run_env)
    say("  " + out.rstrip().replace("\n", "\n  "))


# --- unsupported-arch ------------------------------------------------------------------------

def mode_unsupported_arch(a, tmp):
    cross = os.path.join(a.source, "cross", "riscv64-linux-gnu.txt")
    gcc = "riscv64-linux-gnu-gcc"
    if not shutil.which(gcc):
        raise Fatal(f"{gcc} is not installed (Debian: apt-get install gcc-riscv64-linux-gnu; "
                    "tools/install-deps installs it): Meson needs it to get as far as the facade")
    say(f"== meson setup --cross-file {os.path.relpath(cross, a.source)} must stop with: "
        f"{UNSUPPORTED}")
    log = run([a.meson, "setup", os.path.join(tmp, "build"), a.source, "--cross-file", cross],
              "meson setup for riscv64", expect_fail=True)
    errors = [l for l in log.splitlines() if "ERROR" in l]
    say("  " + "\n  ".join(errors))
    if UNSUPPORTED not in log:
        say("  " + log.rstrip().replace("\n", "\n  "))
        problem("meson setup for riscv64 failed, but without the facade's words (output above)")

    headers = ["smkernel.h"] + [f"smkernel-{x}.h" for x in ARCHES if os.path.isdir(
        os.path.join(a.source, "subprojects", f"smkernel-{x}"))]
    for h in headers:
        say(f"\n== {gcc} -fsyntax-only on #include <{h}> must stop with the same words")
        src = os.path.join(tmp, f"use-{h}.c")
        with open(src, "w") as f:
            f.write(f"#include <{h}>\n")
        incs = ["-I", os.path.join(a.source, "include")] + [
            x for arch in ARCHES for x in ("-I", os.path.join(
                a.source, "subprojects", f"smkernel-{arch}", "include"))]
        out = run([gcc, "-fsyntax-only"] + incs + [src], f"compiling <{h}> for riscv64",
                  expect_fail=True)
        say("  " + "\n  ".join(l for l in out.splitlines() if "#error" in l or "error:" in l))
        if not re.search(r"#error .*" + re.escape(UNSUPPORTED), out):
            problem(f"<{h}> fails to compile for riscv64, but not with the #error's words")


# --- the per-arch sub-library as its own wrap -------------------------------------------------

SUB_MAIN = r"""/* A consumer of the per-arch sub-library alone. SPDX-License-Identifier: MIT */
#include <stdio.h>
#include SMK_ARCH_HEADER

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", argv[1], smk_asset_get(SMK_ASSET_KERNEL)->file_name);
    int r = smk_extract(SMK_ASSET_KERNEL, path, SMK_EXTRACT_PARENTS);
    if (r == 0)
        r = smk_verify_file(SMK_ASSET_KERNEL, path);
    printf("smkernel %s (%s): %s -> %s\n", smk_version(), smk_arch(), path, smk_strerror(r));
    return r != 0;
}
"""

LICENSE_FILES = ("LICENSE", "CORRESPONDING-SOURCE", "MANIFEST.tsv", "GPL-2.0-only.txt",
                 "MIT.txt")


def listing(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


def check_licenses(a, files, root, name):
    where = f"share/licenses/{name}"
    for f in LICENSE_FILES:
        if f"{where}/{f}" not in files:
            problem(f"{where}/{f} is not installed")
    manifest = os.path.join(a.source, "subprojects", f"smkernel-{a.arch}", "blobs",
                            "MANIFEST.tsv")
    installed = os.path.join(root, where, "MANIFEST.tsv")
    if os.path.isfile(installed) and read_file(installed) != read_file(manifest):
        problem(f"{where}/MANIFEST.tsv differs from the sub-library's blobs/MANIFEST.tsv")


def mode_sub_wrap(a, tmp):
    version = version_of(a.source)
    name = f"smkernel-{a.arch}"
    say(f"== the {name} release tarball (tools/release-tarball --sub-library)")
    out = run([sys.executable, a.tool, "--sub-library", a.arch, os.path.join(tmp, "release"),
               a.source], "tools/release-tarball --sub-library")
    say("  " + out.rstrip().replace("\n", "\n  "))
    tarball = [l for l in out.splitlines() if l.endswith(".tar.xz")][0]
    again = run([sys.executable, a.tool, "--sub-library", a.arch, os.path.join(tmp, "again"),
                 a.source], "tools/release-tarball --sub-library, again")
    again = [l for l in again.splitlines() if l.endswith(".tar.xz")][0]
    if read_file(again) != read_file(tarball):
        problem("two runs of tools/release-tarball --sub-library wrote different tarballs")
    if os.path.basename(tarball) != f"{name}-{version}.tar.xz":
        problem(f"the sub-library tarball is {os.path.basename(tarball)}, want "
                f"{name}-{version}.tar.xz")
    with tarfile.open(tarball) as t:
        names = t.getnames()
    for want in ("meson.build", "LICENSE", "CORRESPONDING-SOURCE", "blobs/MANIFEST.tsv",
                 "include/smkernel-common.h"):
        if f"{name}-{version}/{want}" not in names:
            problem(f"{want} is missing from the sub-library tarball")
    if not any(n.startswith(f"{name}-{version}/assets/") for n in names):
        problem("assets/ (the corresponding source) is missing from the sub-library tarball")

    proj = os.path.join(tmp, "project")
    os.makedirs(os.path.join(proj, "subprojects", "packagecache"))
    shutil.copy(tarball, os.path.join(proj, "subprojects", "packagecache"))
    with open(os.path.join(proj, "subprojects", f"{name}.wrap"), "w") as f:
        f.write(f"[wrap-file]\ndirectory = {name}-{version}\n"
                f"source_url = https://releases.smkernel.invalid/{os.path.basename(tarball)}\n"
                f"source_filename = {os.path.basename(tarball)}\n"
                f"source_hash = {hashlib.sha256(read_file(tarball)).hexdigest()}\n\n"
                f"[provide]\ndependency_names = {name}\n")
    with open(os.path.join(proj, "main.c"), "w") as f:
        f.write(SUB_MAIN)
    with open(os.path.join(proj, "meson.build"), "w") as f:
        f.write(f"project('sub-wrap-consumer', 'c', meson_version: '>= 1.0.0')\n"
                f"dep = dependency('{name}', version: '>= 0.1')\n"
                f"assert(dep.version() == '{version}', 'version ' + dep.version())\n"
                f"executable('sub-consumer', 'main.c', dependencies: dep, install: true,\n"
                f"  c_args: ['-DSMK_ARCH_HEADER=<{name}.h>'])\n")
    env = without_check(tmp)
    soversion = version.split(".")[0] if not version.startswith("0.") else \
        ".".join(version.split(".")[:2])
    for library in ("shared", "static"):
        say(f"\n== dependency('{name}', version: '>= 0.1') from the wrap, {library}, installed "
            "into a prefix and run from there")
        build, prefix = os.path.join(tmp, f"build-{library}"), os.path.join(tmp, f"prefix-{library}")
        log = run([a.meson, "setup", build, proj, "--wrap-mode=nodownload", f"--prefix={prefix}",
                   f"-Ddefault_library={library}"], "meson setup of the sub-library consumer",
                  env=env)
        if not re.search(rf"Dependency {name} found: YES {re.escape(version)} \(overridden\)", log):
            problem(f"Meson did not report `Dependency {name} found: YES {version} (overridden)`")
        run([a.meson, "compile", "-C", build], "meson compile", env=env)
        only_own_build(a, build, [], env, sub_library=True)
        run([a.meson, "install", "-C", build, "--quiet"], "meson install", env=env)
        files = listing(prefix)
        say("  installed: " + " ".join(files))
        check_licenses(a, files, prefix, name)
        libs = [f for f in files if os.path.basename(f).startswith(f"lib{name}")]
        exe = os.path.join(prefix, "bin", "sub-consumer")
        run_env = dict(os.environ)
        if library == "shared":
            so = [f for f in libs if os.path.basename(f) == f"lib{name}.so.{soversion}"]
            if not so:
                problem(f"lib{name}.so.{soversion} is not installed: {libs}")
                continue
            libdir = os.path.join(prefix, os.path.dirname(so[0]))
            run_env["LD_LIBRARY_PATH"] = libdir
            resolved = [l.strip() for l in run(["ldd", exe], "ldd", env=run_env).splitlines()
                        if f"lib{name}" in l]
            say(f"  ldd: {' '.join(resolved)}")
            if not resolved or libdir not in resolved[0]:
                problem(f"lib{name} does not resolve into {libdir}")
        elif any(".so" in f for f in libs):
            problem(f"a static build installed a shared library: {libs}")
        out = run([exe, os.path.join(tmp, f"assets-{library}")], "the installed consumer",
                  env=run_env)
        say("  " + out.strip())


# --- examples/ -------------------------------------------------------------------------------

def mode_examples(a, tmp):
    examples = os.path.join(a.source, "examples")
    version = version_of(a.source)
    say("== install smkernel (shared, with its CLI) into a prefix")
    build, prefix = os.path.join(tmp, "build"), os.path.join(tmp, "prefix")
    run([a.meson, "setup", build, a.source, f"--prefix={prefix}", "-Dtests=false"],
        "meson setup of smkernel")
    run([a.meson, "compile", "-C", build], "meson compile of smkernel")
    run([a.meson, "install", "-C", build, "--quiet"], "meson install")
    files = listing(prefix)
    say("  installed:\n    " + "\n    ".join(files))
    check_licenses(a, files, prefix, "smkernel")
    for want in ("bin/smkernel", "share/man/man1/smkernel.1", "include/smkernel.h"):
        if want not in files:
            problem(f"{want} is not installed")
    pcs = [f for f in files if f.endswith("/smkernel.pc")]
    if len(pcs) != 1:
        raise Fatal(f"{len(pcs)} smkernel.pc installed, want 1")
    libdir = os.path.join(prefix, os.path.dirname(os.path.dirname(pcs[0])))
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, os.path.dirname(pcs[0])),
               LD_LIBRARY_PATH=libdir)
    man = run(["man", "-l", os.path.join(prefix, "share/man/man1/smkernel.1")], "man smkernel",
              env=dict(env, MANWIDTH="80")) if shutil.which("man") else ""
    if man and "smkernel extract" not in man:
        problem("the man page does not render the extract command")

    say("\n== examples/minimal: cc main.c $(pkg-config --cflags --libs smkernel)")
    flags = run(["pkg-config", "--cflags", "--libs", "smkernel"], "pkg-config", env=env).split()
    exe = os.path.join(tmp, "minimal")
    cc = os.environ.get("CC", "cc").split()
    run(cc + ["-Wall", "-Wextra", "-Werror", os.path.join(examples, "minimal", "main.c"), "-o",
              exe] + flags, "compiling examples/minimal/main.c", env=env)
    out = run([exe, os.path.join(tmp, "minimal-out")], "examples/minimal", env=env)
    say("  " + out.rstrip().replace("\n", "\n  "))
    if "identical to the file" not in out:
        problem("examples/minimal did not find the buffer identical to the file")

    say("\n== examples/cmake: pkg_check_modules(IMPORTED_TARGET)")
    if not shutil.which("cmake"):
        raise Fatal("cmake is not installed (tools/install-deps installs it)")
    cbuild = os.path.join(tmp, "cmake-build")
    run(["cmake", "-S", os.path.join(examples, "cmake"), "-B", cbuild], "cmake configure",
        env=env)
    run(["cmake", "--build", cbuild], "cmake --build", env=env)
    out = run([os.path.join(cbuild, "cmake-example"), os.path.join(tmp, "cmake-out")],
              "examples/cmake", env=env)
    say("  " + out.rstrip().replace("\n", "\n  "))
    if "identical to the file" not in out:
        problem("examples/cmake did not find the buffer identical to the file")

    say("\n== examples/meson-wrap: the release tarball as a wrap, Check hidden")
    copy = os.path.join(tmp, "examples")
    shutil.copytree(examples, copy)
    proj = os.path.join(copy, "meson-wrap")
    cache = os.path.join(proj, "subprojects", "packagecache")
    os.makedirs(cache)
    tarball = release_tarball(a.tool, a.arch, a.source, cache)
    name = os.path.basename(tarball)
    with open(os.path.join(proj, "subprojects", "smkernel.wrap"), "w") as f:
        f.write(f"[wrap-file]\ndirectory = smkernel-{version}\n"
                f"source_url = https://releases.smkernel.invalid/{version}/{name}\n"
                f"source_filename = {name}\n"
                f"source_hash = {hashlib.sha256(read_file(tarball)).hexdigest()}\n\n"
                "[provide]\ndependency_names = smkernel\n")
    wenv = without_check(tmp)
    wbuild = os.path.join(tmp, "wrap-build")
    run([a.meson, "setup", wbuild, proj, "--wrap-mode=nodownload", "--force-fallback-for=smkernel",
         "--prefix=/usr"], "meson setup of examples/meson-wrap", env=wenv)
    run([a.meson, "compile", "-C", wbuild], "meson compile of examples/meson-wrap", env=wenv)
    only_own_build(a, wbuild, ["extract"], wenv)
    run([a.meson, "test", "-C", wbuild], "meson test of examples/meson-wrap", env=wenv)
    dest = os.path.join(tmp, "wrap-destdir")
    run([a.meson, "install", "-C", wbuild, "--destdir", dest, "--quiet"], "meson install",
        env=wenv)
    files = listing(os.path.join(dest, "usr"))
    say("  installed: " + " ".join(files))
    for f in files:
        if f == "bin/smkernel" or f.startswith("share/man/") or f.startswith("include/"):
            problem(f"the wrap consumer's install holds smkernel's {f}")
    check_licenses(a, files, os.path.join(dest, "usr"), "smkernel")


MODES = {"release-tarball": mode_release_tarball, "wrap": mode_wrap,
         "pkgconfig": mode_pkgconfig, "unsupported-arch": mode_unsupported_arch,
         "sub-wrap": mode_sub_wrap, "examples": mode_examples}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("--meson", default="meson")
    ap.add_argument("--source", required=True, help="the smkernel source tree")
    ap.add_argument("--arch", choices=ARCHES)
    ap.add_argument("--tool", help="tools/release-tarball")
    ap.add_argument("--cross-file", help="relative to the unpacked tarball (release-tarball)")
    ap.add_argument("--project", help="tests/consumers/wrap-project (wrap)")
    ap.add_argument("--library", choices=("shared", "static"), help="pkgconfig")
    ap.add_argument("--consumer", help="pkgconfig-consumer.c (pkgconfig)")
    a = ap.parse_args()
    a.source = os.path.abspath(a.source)

    # `meson test` stops a test that runs too long with SIGTERM: leave no temporary files then.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("FAIL: killed (timeout?)"))
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"smk-consumer-{a.mode}-") as tmp:
        try:
            MODES[a.mode](a, tmp)
        except Fatal as e:
            problem(str(e))
    took = time.monotonic() - start
    if problems:
        say(f"\n{a.mode}: FAIL after {took:.0f} s:\n  " + "\n  ".join(problems))
        return 1
    say(f"\n{a.mode}: PASS in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
