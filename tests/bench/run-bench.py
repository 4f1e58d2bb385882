#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""run-bench.py: build and run the extraction benchmark (bench.c) with its inputs.

Meson 1.0 builds a benchmark's prerequisites with the default build; the benchmark's inputs
are made here instead, when `meson test --benchmark` runs it: the bench program (ninja, in the
build directory), the stripped library (strip, when found) and the synthetic asset 4x the
largest real one (make-4x.py, when zstd and assets/pack are there), in a temporary directory
removed at the end. Cross builds run the program through $SMK_BENCH_WRAPPER.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-root", required=True)
    ap.add_argument("--bench", required=True, help="the bench program's path in the build")
    ap.add_argument("--lib", required=True, help="the shared library to strip and measure")
    ap.add_argument("--strip", help="the strip for the library's arch (default: strip on PATH)")
    ap.add_argument("--rounds", default="11")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--pack", required=True, help="assets/pack (its codec settings)")
    ap.add_argument("--make-4x", required=True)
    a = ap.parse_args()

    ninja = shutil.which("ninja") or shutil.which("samu")
    if not ninja:
        sys.exit("run-bench: no ninja to build the bench program")
    subprocess.run([ninja, "-C", a.build_root, os.path.relpath(a.bench, a.build_root)],
                   check=True)
    wrapper = os.environ.get("SMK_BENCH_WRAPPER", "").split()
    with tempfile.TemporaryDirectory(prefix="smk-bench-") as tmp:
        stripped = ""
        strip = a.strip or shutil.which("strip")
        if strip and (a.lib.endswith(".so") or ".so." in a.lib):
            stripped = os.path.join(tmp, "libsmkernel-stripped.so")
            subprocess.run([strip, "-o", stripped, a.lib], check=True)
        args = [a.rounds, stripped]
        if shutil.which("zstd") and os.path.isfile(a.pack):
            synth = os.path.join(tmp, "bench-4x.zst")
            subprocess.run([sys.executable, a.make_4x, a.manifest, a.pack, synth], check=True)
            args.append(synth)
        return subprocess.run(wrapper + [a.bench] + args).returncode


if __name__ == "__main__":
    sys.exit(main())
