#!/usr/bin/env python3
"""initramfs-cost.py --kernel K --init INIT --cmdline-file F --busybox BUSYBOX [--repeat N]

What the busybox toolset costs an x86_64 boot before `/init` runs, in guest instructions
(docs/BENCHMARKS.md): bare `/init` boots (boot-icount.py's runner and machine, *tcg* command
line) with four archives, every case once per round:
  bare     test-init as /init (the baseline)
  links    + one symlink in /bin per busybox applet (`busybox --list`), as cpio entries
  busybox  + /bin/busybox itself
  both     + both
and prints the medians and each case's cost over the baseline.
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("boot_icount", os.path.join(here, "boot-icount.py"))
bi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bi)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", required=True, help="x86_64 kernel (the PVH vmlinux or bzImage)")
    ap.add_argument("--init", required=True, help="static assets/kernel/test-init.c")
    ap.add_argument("--cmdline-file", required=True)
    ap.add_argument("--busybox", required=True, help="the static busybox of the x86_64 assets")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=180)
    a = ap.parse_args()
    with open(a.init, "rb") as f:
        init = f.read()
    with open(a.busybox, "rb") as f:
        busybox = f.read()
    applets = subprocess.run([a.busybox, "--list"], check=True, stdout=subprocess.PIPE,
                             text=True).stdout.split()
    applets = [x for x in applets if x != "busybox"]
    if not applets:
        sys.exit("initramfs-cost: busybox --list printed no applet")
    base = [("dev", 0o40755, b""), ("dev/console", 0o20600, (5, 1)), ("init", 0o100755, init),
            ("proc", 0o40755, b""), ("bin", 0o40755, b"")]
    links = [(f"bin/{x}", 0o120777, b"/bin/busybox") for x in applets]
    binary = [("bin/busybox", 0o100755, busybox)]
    cases = {"bare": base, "links": base + links, "busybox": base + binary,
             "both": base + links + binary}
    with open(a.cmdline_file) as f:
        cmdline = " ".join(f.read().split() + bi.TCG_EXTRAS["x86_64"])

    class Args:
        pass
    args = Args()
    args.qemu, args.arch, args.mem, args.timeout = "qemu-system-x86_64", "x86_64", 256, a.timeout
    res = {}
    with tempfile.TemporaryDirectory(prefix="smk-initramfs-cost-") as tmp:
        run = bi.Runner(args, tmp)
        print(f"initramfs-cost: {len(applets)} applet links, busybox {len(busybox)} B, "
              f"kernel {a.kernel}\ninitramfs-cost: cmdline {cmdline}", flush=True)
        for rnd in range(a.repeat):
            for name, entries in cases.items():
                args.bare_cpio = os.path.join(tmp, f"{name}.cpio")
                with open(args.bare_cpio, "wb") as f:
                    f.write(bi.newc(entries))
                r = run.bare(a.kernel, cmdline)
                res.setdefault(name, []).append(r["reset"])
                print(f"  {name} round {rnd + 1}: {r['reset'] / 1e6:.3f} M since reset", flush=True)
    bare = statistics.median(res["bare"])
    print(f"\n{'archive':8} {'M to /init':>11} {'over bare':>10}")
    for name, v in res.items():
        m = statistics.median(v)
        extra = f"{(m - bare) / 1e6:10.2f}"
        if name == "links":
            extra += f"  ({(m - bare) / len(applets) / 1e3:.1f} k per link)"
        print(f"{name:8} {m / 1e6:11.2f} {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
