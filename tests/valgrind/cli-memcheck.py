#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""cli-memcheck.py SMKERNEL_CLI: every CLI command, good and bad input, under valgrind memcheck.

Each run must end with the CLI's expected exit status, "ERROR SUMMARY: 0 errors" and no leaked
block of any kind (definitely, indirectly, possibly lost or still reachable). A missing
valgrind is a failure, never a skip.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

VALGRIND = ["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=all",
            "--errors-for-leak-kinds=all", "--track-origins=yes", "--error-exitcode=99",
            "--child-silent-after-fork=yes"]


def main():
    cli = os.path.abspath(sys.argv[1])
    if not shutil.which("valgrind"):
        print("FAIL: valgrind is not installed (tools/install-deps installs it)")
        return 1
    failed = 0
    with tempfile.TemporaryDirectory(prefix="smk-memcheck-") as tmp:
        env = dict(os.environ, SMKERNEL_CACHE_DIR=os.path.join(tmp, "cache"))
        extra = os.path.join(tmp, "extra.txt")
        with open(extra, "w") as f:
            f.write("hello\n")
        os.mkfifo(os.path.join(tmp, "fifo"))
        kernel = subprocess.run([cli, "list"], capture_output=True, text=True,
                                check=True).stdout.split("\n")[1].split()[0]
        runs = [
            (0, ["--version"]),
            (0, ["--help"]),
            (0, ["list"]),
            (0, ["cmdline"]),
            (0, ["extract", kernel, f"{tmp}/k"]),
            (0, ["extract", kernel, f"{tmp}/k"]),  # replaces an existing file
            (0, ["extract", "--parents", "supermachine-agent", f"{tmp}/a/b/agent"]),
            (0, ["extract", "--all", f"{tmp}/all"]),
            (0, ["verify", kernel, f"{tmp}/k"]),
            (0, ["path", kernel]),  # cold cache
            (0, ["path", kernel]),  # warm
            (0, ["initramfs", "--add", f"{extra}:/etc/extra:0644", f"{tmp}/initrd"]),
            (1, ["verify", kernel, f"{tmp}/a/b/agent"]),
            (1, ["extract", kernel, f"{tmp}/missing/k"]),
            (1, ["extract", kernel, f"{tmp}/fifo"]),
            (1, ["extract", kernel, tmp]),
            (1, ["extract", kernel, "x" * 5000]),
            (1, ["initramfs", "--add", f"{tmp}/nope:/x", f"{tmp}/initrd2"]),
            (2, []),
            (2, ["frobnicate"]),
            (2, ["extract", "no-such-asset", f"{tmp}/x"]),
            (2, ["extract", kernel]),
            (2, ["initramfs", "--add", "nocolon", f"{tmp}/initrd3"]),
        ]
        for n, (want, args) in enumerate(runs):
            log = os.path.join(tmp, f"vg-{n}.log")
            r = subprocess.run(VALGRIND + [f"--log-file={log}", cli] + args, env=env,
                               capture_output=True, text=True, stdin=subprocess.DEVNULL)
            with open(log) as f:
                report = f.read()
            errors = re.search(r"ERROR SUMMARY: (\d+) errors", report)
            clean = ("All heap blocks were freed -- no leaks are possible" in report or
                     "in use at exit: 0 bytes in 0 blocks" in report)
            ok = r.returncode == want and errors and errors.group(1) == "0" and clean
            shown = " ".join(a if len(a) < 60 else a[:20] + "..." for a in args)
            print(f"{'ok  ' if ok else 'FAIL'} smkernel {shown}: exit {r.returncode} "
                  f"(want {want}), {errors.group(1) if errors else '?'} errors, "
                  f"{'no leaks' if clean else 'LEAKS'}")
            if not ok:
                failed += 1
                print(report[-3000:])
                print(r.stderr[-1000:])
    print(f"valgrind memcheck: {len(runs) - failed} of {len(runs)} CLI runs clean")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
