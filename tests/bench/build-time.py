#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""build-time.py SUBPROJECT_DIR [ROUNDS [MESON_SETUP_ARG ...]]

Full build time of a per-arch sub-library (meson setup + ninja in a fresh directory, tests off)
as it is (blobs embedded with .incbin) against the same library with the same blobs embedded as
a generated C byte array, the way libkrunfw embeds its kernel (a C source with the bytes as
`0x..,` initializers). Both variants build from temp copies of SUBPROJECT_DIR, alternating,
ROUNDS times each (default 3); the medians and their ratio are printed. The goal:
the .incbin build takes at most 10% of the C-array build.

The C-array copy runs the same tools/gen-embed.py, then moves every blob out of the generated
blobs.S into a C file (same symbol, hidden, const, 64-byte aligned), so everything else about
the two builds is the same. Extra arguments go to `meson setup` (e.g. a cross file).
"""
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

WRAPPER = r'''#!/usr/bin/env python3
# The C-array variant of gen-embed (written by tests/bench/build-time.py).
import os, re, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
subprocess.run([sys.executable, os.path.join(here, "gen-embed-incbin.py")] + sys.argv[1:], check=True)
args = sys.argv[1:]
out_asm = args[args.index("--out-asm") + 1]
out_c = args[args.index("--out-c") + 1]
asm = open(out_asm).read().split("\n")
keep, arrays, i = [], [], 0
while i < len(asm):
    m = re.match(r"\t\.globl SMK_SYM\((smk__blob_\w+)\)", asm[i])
    if m and i >= 1 and asm[i - 1].strip() == ".p2align 6":
        sym = m.group(1)
        path = re.match(r'\t\.incbin "(.*)"', asm[i + 3]).group(1)
        keep.pop()  # the .p2align
        arrays.append((sym, path))
        i += 4
        continue
    keep.append(asm[i])
    i += 1
with open(out_asm, "w") as f:
    f.write("\n".join(keep))
with open(out_c, "a") as f:
    for sym, path in arrays:
        data = open(path, "rb").read()
        f.write(f"\n__attribute__((aligned(64))) const unsigned char {sym}[{len(data)}] = {{\n")
        for off in range(0, len(data), 16):
            f.write("".join(f"0x{b:02x}," for b in data[off:off + 16]) + "\n")
        f.write("};\n")
'''


def build(src, variant, tmp, setup_args, n):
    root = os.path.join(tmp, f"{variant}-{n}")
    sub = os.path.join(root, os.path.basename(src))
    shutil.copytree(src, sub, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    if variant == "c-array":
        tools = os.path.join(sub, "tools")
        os.rename(os.path.join(tools, "gen-embed.py"), os.path.join(tools, "gen-embed-incbin.py"))
        with open(os.path.join(tools, "gen-embed.py"), "w") as f:
            f.write(WRAPPER)
    bdir = os.path.join(root, "build")
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(["meson", "setup", bdir, sub, "-Dtests=disabled"] + setup_args, check=True,
                   stdout=subprocess.DEVNULL)
    t1 = time.monotonic()
    subprocess.run(["ninja", "-C", bdir], check=True, stdout=subprocess.DEVNULL)
    t2 = time.monotonic()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    libs = [f for f in os.listdir(bdir) if f.startswith("lib") and ".so." in f and
            not os.path.islink(os.path.join(bdir, f))]
    size = os.path.getsize(os.path.join(bdir, libs[0])) if libs else 0
    shutil.rmtree(root)
    return t1 - t0, t2 - t1, size, cpu


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    src = os.path.abspath(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    setup_args = sys.argv[3:]
    times = {"incbin": [], "c-array": []}
    with tempfile.TemporaryDirectory(prefix="smk-buildtime-") as tmp:
        for n in range(rounds):
            order = ["incbin", "c-array"] if n % 2 == 0 else ["c-array", "incbin"]
            for v in order:
                setup, compile_, size, cpu = build(src, v, tmp, setup_args, n)
                times[v].append((setup, compile_, size, cpu))
                print(f"round {n + 1} {v:8}: setup {setup:6.2f} s, ninja {compile_:6.2f} s, "
                      f"total {setup + compile_:6.2f} s, CPU {cpu:6.2f} s, library {size:,} B",
                      flush=True)
    med = {v: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts),
               statistics.median(t[0] + t[1] for t in ts), statistics.median(t[3] for t in ts))
           for v, ts in times.items()}
    print(f"\n{os.path.basename(src)}: full build (meson setup + ninja, tests off), median of "
          f"{rounds}:")
    for v in ("incbin", "c-array"):
        print(f"  {v:8}: setup {med[v][0]:6.2f} s  ninja {med[v][1]:6.2f} s  total {med[v][2]:6.2f} s"
              f"  CPU (user+sys of all processes) {med[v][3]:6.2f} s")
    ratio = med["incbin"][2] / med["c-array"][2]
    ratio_ninja = med["incbin"][1] / med["c-array"][1]
    ratio_cpu = med["incbin"][3] / med["c-array"][3]
    print(f"  incbin / C array: total {ratio:.1%} (goal <= 10%: {'met' if ratio <= 0.10 else 'NOT met'}),"
          f" ninja only {ratio_ninja:.1%}, CPU time {ratio_cpu:.1%}")


if __name__ == "__main__":
    main()
