#!/usr/bin/env python3
"""Deterministic guest boot work: guest instructions to /init and to agent-ready.

    boot-icount.py --arch ARCH --kernel K --initramfs I --cmdline-file F --client AGENT
                   --init INIT [--vmlinux V] [--anchor NAME=KERNEL ...] [--repeat N]
                   [--shipped-repeat N] [--qemu BIN] [--timeout S] [--no-phases]

Every boot runs under `qemu-system-ARCH -accel tcg,thread=single -icount shift=0,sleep=off`:
the guest clock advances one nanosecond per guest instruction, and skips idle time to the
next timer (a timer wait counts as the time it waits, not as instructions). Guest time is
then a deterministic count of the guest's work, whatever the host's load.

Per kernel and command line it boots
  bare   an initramfs holding only INIT (assets/kernel/test-init.c) as /init, which prints
         CLOCK_BOOTTIME and the CPU's free-running counter first thing;
  agent  the library's initramfs (INITRAMFS), pinged through the agent client (ready_ns).
Columns:
  reset_M   guest time from the machine's reset, in millions of instructions: the counter
            (x86 TSC: 1 GHz under icount, as the kernel's own calibration reports; arm64
            CNTVCT at CNTFRQ). It includes what runs before the kernel's clock starts (the
            bzImage decompressor, early setup). For agent-ready: ready_ns + the bare boot's
            (counter - uptime) of the same kernel and command line.
  clock_M   the kernel's CLOCK_BOOTTIME (what /proc/uptime and ready_ns report).
  spread    (max - min) / median of reset_M over the boots.
  host_s    wall time from spawning qemu to the marker / the ping reply (TCG, noisy: secondary).
Command lines: "shipped" is the cmdline file as it is; on x86_64 "tcg" adds the TCG extras
(noapictimer, tsc_early_khz=1000000: under -icount shift=0 the TSC runs at exactly 1 GHz).
aarch64 has no TCG extras: one command line.
Anchors (other runtimes' kernels, assets/kernel/build-anchors) boot to the bare /init only,
on the same machine and command line. More anchors: SMK_BENCH_ANCHORS="NAME=KERNEL ...".
Phases (unless --no-phases): one more bare boot per kernel with "dmesg" (the /init prints
the kernel log: printk times are guest instructions) and one with initcall_debug
(per-initcall instructions, every kernel; the logging itself adds work, so its total is
printed too).

Exit status 0 only if every boot reached its marker; a boot that cannot run fails.
Python 3 standard library only.
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

MARK = re.compile(rb"SMK-INIT-MARKER uptime ([0-9]+)\.([0-9]{9}) counter ([0-9]+) counter_hz ([0-9]+)")
PORT_NAME = "smk.agent"
TCG_EXTRAS = {"x86_64": ["noapictimer", "tsc_early_khz=1000000"], "aarch64": []}


def newc(entries):
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        rdev = (0, 0)
        if isinstance(data, tuple):
            rdev, data = data, b""
        nb = name.encode() + b"\0"
        out += ("070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0))).encode() + nb
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def machine(arch):
    if arch == "x86_64":
        return ["-M", "microvm,acpi=off", "-smp", "1"]
    return ["-M", "virt", "-cpu", "cortex-a57", "-smp", "2"]


class Runner:
    def __init__(self, a, tmp):
        self.a = a
        self.tmp = tmp
        self.n = 0

    def qemu(self, kernel, initrd, cmdline, sock):
        return [self.a.qemu] + machine(self.a.arch) + [
            "-accel", "tcg,thread=single", "-icount", "shift=0,sleep=off",
            "-m", str(self.a.mem), "-no-reboot", "-nographic", "-monitor", "none", "-nic", "none",
            "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
            # the agent's port; the bare boots get the same device (same machine)
            "-device", "virtio-serial-device",
            "-chardev", f"socket,id=agent,path={sock},server=on,wait=off",
            "-device", f"virtserialport,chardev=agent,name={PORT_NAME}"]

    def _spawn(self, argv, console):
        log = open(console, "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        log.close()
        return p

    @staticmethod
    def _kill(p):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()

    def bare(self, kernel, cmdline):
        """-> dict(reset_ns, clock_ns, host_s, log) or raises RuntimeError."""
        self.n += 1
        console = os.path.join(self.tmp, f"c{self.n}.log")
        sock = os.path.join(self.tmp, f"s{self.n}.sock")
        t0 = time.monotonic()
        p = self._spawn(self.qemu(kernel, self.a.bare_cpio, cmdline, sock), console)
        host = None
        try:
            deadline = t0 + self.a.timeout
            want_log = b" dmesg" in b" " + cmdline.encode()
            while time.monotonic() < deadline:
                with open(console, "rb") as f:
                    data = f.read()
                m = MARK.search(data)
                if m and host is None:
                    host = time.monotonic() - t0
                if m and (not want_log or b"SMK-DMESG-END" in data):
                    break
                if p.poll() is not None:
                    with open(console, "rb") as f:
                        data = f.read()
                    m = MARK.search(data)
                    break
                time.sleep(0.005)
        finally:
            self._kill(p)
        if not m:
            raise RuntimeError(f"no marker from /init within {self.a.timeout} s; console tail:\n"
                               + data.decode(errors="replace")[-2500:])
        clock = int(m.group(1)) * 10**9 + int(m.group(2))
        cnt, hz = int(m.group(3)), int(m.group(4))
        reset = cnt if self.a.arch == "x86_64" else cnt * 10**9 // hz
        log = b""
        i, j = data.find(b"SMK-DMESG-BEGIN"), data.find(b"SMK-DMESG-END")
        if 0 <= i < j:
            log = data[i:j]
        return {"reset": reset, "clock": clock, "host": host, "log": log.decode(errors="replace")}

    def agent(self, kernel, cmdline):
        self.n += 1
        console = os.path.join(self.tmp, f"c{self.n}.log")
        sock = os.path.join(self.tmp, f"s{self.n}.sock")
        t0 = time.monotonic()
        p = self._spawn(self.qemu(kernel, self.a.initramfs, cmdline, sock), console)
        try:
            r = subprocess.run([self.a.client, "client", f"unix:{sock}", "ping", "--wait",
                                str(int(self.a.timeout))], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=self.a.timeout + 10)
            host = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            r, host = None, None
        finally:
            self._kill(p)
        m = re.search(rb"ready_ns=([0-9]+)", r.stdout) if r else None
        if not m:
            with open(console, "rb") as f:
                tail = f.read().decode(errors="replace")[-2500:]
            why = (r.stderr.decode(errors="replace") if r else "client timed out")
            raise RuntimeError(f"no ping reply ({why.strip()}); console tail:\n{tail}")
        return {"clock": int(m.group(1)), "host": host}


def med(v):
    return statistics.median(v)


def phases(log, reset_ns, clock_ns):
    """Milestones from the kernel log's printk times (guest ns under icount)."""
    times = []
    for ln in log.splitlines():
        m = re.match(r"<\d+>\[\s*(\d+)\.(\d{6})\] (.*)", ln)
        if m:
            times.append((int(m.group(1)) * 10**9 + int(m.group(2)) * 1000, m.group(3)))

    def first(pat):
        for t, s in times:
            if re.search(pat, s):
                return t
        return None
    # printk time and CLOCK_BOOTTIME do not start at the same instant (sched_clock can be up
    # earlier): align them on the "Run /init" line, which is printed right before the exec.
    run = first(r"^Run /init as init process")
    if run is None:
        return None
    off = reset_ns - clock_ns          # reset -> the kernel clock's zero
    shift = clock_ns - run             # printk time -> kernel clock (≈ 0)
    marks = [("memory map initialised (\"Memory:\")", first(r"^Memory: ")),
             ("clocksource switched", first(r"^clocksource: Switched to clocksource")),
             ("initcalls done (\"Freeing unused kernel\")", first(r"^Freeing unused kernel")),
             ("\"Run /init\"", run)]
    rows = [("reset -> kernel clock starts (decompressor, early setup)", off)]
    prev = 0
    for name, t in marks:
        if t is None:
            continue
        t = max(0, t + shift)
        rows.append((f"clock start -> {name}" if prev == 0 else f"... -> {name}", t - prev))
        prev = t
    rows.append(("\"Run /init\" -> /init's first clock read", clock_ns - prev))
    return rows


def initcalls(log):
    """(total ns, top list, count) from an initcall_debug log. Each initcall's time is the
    difference of the printk times of its "calling" and "returned" lines: sched_clock, which
    under icount counts guest ns from early on. (The kernel's own "after N usecs" reads
    ktime, which runs on the jiffies clocksource, in 4 ms steps, until the clocksource switch.)"""
    start, calls = {}, []
    for m in re.finditer(r"<\d+>\[\s*(\d+)\.(\d{6})\] (calling  |initcall )(\S+?)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?"
                         r"(?: @ \d+| returned)", log):
        t = int(m.group(1)) * 10**9 + int(m.group(2)) * 1000
        fn = m.group(4)
        if m.group(3).startswith("calling"):
            start[fn] = t
        elif fn in start:
            calls.append((t - start.pop(fn), fn))
    calls.sort(reverse=True)
    return sum(c for c, _ in calls), calls[:12], len(calls)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=["x86_64", "aarch64"])
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--vmlinux", help="x86_64: also our ELF vmlinux, booted through PVH")
    ap.add_argument("--initramfs", required=True)
    ap.add_argument("--cmdline-file", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--init", required=True, help="static assets/kernel/test-init.c for the guest")
    ap.add_argument("--anchor", action="append", default=[], metavar="NAME=KERNEL")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shipped-repeat", type=int, default=1,
                    help="boots with the shipped x86_64 command line (~250 M instructions of APIC "
                    "timer calibration under TCG, ~30 s each; default 1)")
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--qemu")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--no-phases", action="store_true")
    a = ap.parse_args()
    a.qemu = a.qemu or f"qemu-system-{a.arch}"
    anchors = list(a.anchor) + os.environ.get("SMK_BENCH_ANCHORS", "").split()
    bad = []
    if not shutil.which(a.qemu):
        bad.append(f"qemu not found: {a.qemu}")
    kernels = [("ours", a.kernel)] + ([("ours-pvh", a.vmlinux)] if a.vmlinux else [])
    for spec in anchors:
        name, _, path = spec.partition("=")
        if not name or not path:
            bad.append(f"anchor not NAME=KERNEL: {spec!r}")
        kernels.append((name, path))
    for what, path in [("initramfs", a.initramfs), ("client", a.client), ("init", a.init),
                       ("cmdline file", a.cmdline_file)] + kernels:
        if not path or not os.path.isfile(path) or os.path.getsize(path) == 0:
            bad.append(f"{what}: missing or empty: {path}")
    if bad:
        for b in bad:
            print(f"FAIL preflight: {b}")
        return 1
    with open(a.cmdline_file) as f:
        shipped = " ".join(f.read().split())
    variants = [("shipped", shipped, a.shipped_repeat if a.arch == "x86_64" else a.repeat)]
    if TCG_EXTRAS[a.arch]:
        variants.append(("tcg", " ".join([shipped] + TCG_EXTRAS[a.arch]), a.repeat))
    variants = [v for v in variants if v[2] > 0]   # --shipped-repeat 0: the x86 TCG rows only

    tmp = tempfile.mkdtemp(prefix="smk-boot-icount-")
    try:
        with open(a.init, "rb") as f:
            init = f.read()
        a.bare_cpio = os.path.join(tmp, "bare.cpio")
        with open(a.bare_cpio, "wb") as f:
            f.write(newc([("dev", 0o40755, b""), ("dev/console", 0o20600, (5, 1)),
                          ("init", 0o100755, init), ("proc", 0o40755, b"")]))
        run = Runner(a, tmp)
        print(f"boot-icount: {a.arch}, qemu {' '.join(machine(a.arch))} -m {a.mem} "
              f"-accel tcg,thread=single -icount shift=0,sleep=off", flush=True)
        for v, cl, _ in variants:
            print(f"boot-icount: cmdline {v}: {cl}", flush=True)
        for name, path in kernels:
            print(f"boot-icount: kernel {name}: {path} ({os.path.getsize(path)} B)", flush=True)

        res = {}
        for v, cl, n in variants:
            # interleaved rounds: every case once per round
            for rnd in range(n):
                for name, path in kernels:
                    cases = [("bare", run.bare)] + ([("agent", run.agent)] if name.startswith("ours") else [])
                    for kind, fn in cases:
                        r = fn(path, cl)
                        res.setdefault((v, name, kind), []).append(r)
                        print(f"  {v} {name} {kind} round {rnd + 1}: clock {r['clock'] / 1e6:.3f} M"
                              + (f", reset {r['reset'] / 1e6:.3f} M" if "reset" in r else "")
                              + f", host {r['host']:.2f} s", flush=True)

        print()
        print("variant\tkernel\tto\treset_M\tclock_M\tspread\thost_s\tboots")
        summary = {}
        for v, _, _ in variants:
            for name, _ in kernels:
                b = res[(v, name, "bare")]
                off = med([r["reset"] - r["clock"] for r in b])
                rows = [("/init", [r["reset"] for r in b], [r["clock"] for r in b], [r["host"] for r in b])]
                if (v, name, "agent") in res:
                    g = res[(v, name, "agent")]
                    rows.append(("agent-ready", [r["clock"] + off for r in g], [r["clock"] for r in g],
                                 [r["host"] for r in g]))
                for to, rs, cs, hs in rows:
                    m = med(rs)
                    summary[(v, name, to)] = m
                    print(f"{v}\t{name}\t{to}\t{m / 1e6:.3f}\t{med(cs) / 1e6:.3f}\t"
                          f"{(max(rs) - min(rs)) / m * 100:.2f}%\t{med(hs):.2f}\t{len(rs)}")
        print()
        for v, _, _ in variants:
            for ours in [k for k, _ in kernels if k.startswith("ours")]:
                ar, bi = summary.get((v, ours, "agent-ready")), summary.get((v, ours, "/init"))
                if ar and bi:
                    print(f"{v}: {ours} agent-ready - {ours} bare /init = {(ar - bi) / 1e6:.3f} M instructions"
                          f" (goal <= 2 M)")
                for name, _ in kernels:
                    if name.startswith("ours"):
                        continue
                    an = summary[(v, name, "/init")]
                    if ar:
                        print(f"{v}: {ours} agent-ready / {name} bare /init = {ar / an:.3f}"
                              f" ({ar / 1e6:.3f} M / {an / 1e6:.3f} M, since reset)")
        if a.arch == "x86_64" and len(variants) == 2:
            for name, _ in kernels:
                s, t = summary[("shipped", name, "/init")], summary[("tcg", name, "/init")]
                print(f"{name}: shipped - tcg command line to /init = {(s - t) / 1e6:.3f} M "
                      "(what noapictimer and tsc_early_khz skip: the local APIC timer and TSC "
                      "calibrations, where the kernel runs them; a KVM host with the TSC-deadline "
                      "timer and kvmclock skips both)")

        if not a.no_phases:
            cl = variants[-1][1]
            print()
            print(f"phases ({variants[-1][0]} command line + dmesg; M instructions):")
            for name, path in kernels:
                r = run.bare(path, cl + " dmesg")
                ph = phases(r["log"], r["reset"], r["clock"])
                print(f"  {name}: /init at {r['reset'] / 1e6:.3f} M since reset")
                for label, ns in ph or []:
                    print(f"    {ns / 1e6:8.3f}  {label}")
                if not ph:
                    print("    (no \"Run /init\" line in the kernel log)")
            for name, path in kernels:
                r = run.bare(path, cl + " initcall_debug log_buf_len=4M dmesg")
                total, top, count = initcalls(r["log"])
                print(f"  {name} with initcall_debug: /init at {r['reset'] / 1e6:.3f} M since reset "
                      f"(the logging adds work); {count} initcalls, {total / 1e6:.3f} M in them; largest:")
                for ns, fn in top:
                    print(f"    {ns / 1e6:8.3f}  {fn}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        return 0
    except RuntimeError as e:
        print(f"FAIL: {e}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
