#!/usr/bin/env python3
"""Snapshot and restore a running guest under qemu, then restore two clones from the
one state file and check what a guest must get right after a restore.

    snapshot.py --arch x86_64|aarch64 --kernel K --initramfs I --cmdline-file F
                --client AGENT --host SNAP_HOST [--smp N] [--mem MB] [--icount] [--timeout S] [-v] [--keep]

The initramfs must hold tests/snapshot/snap-guest.c as /bin/snap-guest (and, on
aarch64, tests/boot/guest-tool.c as /bin/guest-tool and smpark.ko, as the boot
test's does). Guests are booted as tests/boot/boot.py boots them (its module is
imported: machine, devices, TCG command line extras, the agent client), plus a
QMP socket and a virtio-net NIC on a restricted user network (restrict=on: no
traffic leaves it). SNAP_HOST is tests/snapshot/snap-host.c: the library's agent
client (spawn, attach, smk_agent_after_restore).

The procedure, per docs/SNAPSHOTS.md:
  source: boot, start a detached background process, name the guest; on aarch64
    insmod smpark and park the other vCPUs (a capture attempted while
    /sys/kernel/smpark/parked is not smp-1 is refused by capture()); spawn a
    4 s sleep through the library client, which waits for its exit; QMP stop; a
    request is sent to the stopped VM; migrate to "exec:cat > FILE", quit.
  each clone: a new qemu with the same command line plus -S -incoming
    "exec:cat FILE"; the agent client is started (its request waits in the
    chardev) and then QMP cont; on aarch64 unpark; then post_restore(): one
    smk_agent_after_restore() (wall clock, CRNG reseed with host entropy,
    hostname, the source's IPv4 address replaced).
  checks: both clients of the source (the spawn's, the request's) failed
    cleanly when it went away; each clone takes the sleep over with ATTACH and
    sees it exit 0; the agent answers
    on virtio-serial and its vsock listener (in-guest loopback) answers; the
    background process still runs; the clock is within 1 s of the host; the two
    clones read different /dev/urandom bytes, have their own names and addresses.

Figures printed: state file size, capture and restore wall time, how far the
guest clock was off before the fix; with --icount (-icount shift=0,sleep=on,
one TCG thread) the guest instructions from cont to the agent's first answer
(QMP query-replay), next to the same stop, connect, cont and answer on the source. sleep=on keeps idle time real, so the guest's timers do not
fire back to back while the host is between steps (sleep=off skips idle time,
and the test's 100 ms ticker then runs flat out). Under --icount the guest
clock runs at one ns per instruction while busy, so its offset to the host is
not checked there.

Every step prints PASS or FAIL; the last line is "N passed, N failed". Exit 0
only if all passed; missing qemu or inputs FAIL, never skip. Python 3 stdlib only.
"""
import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "boot"))
import boot  # noqa: E402  (tests/boot/boot.py: how guests are booted)

SNAP_GUEST = "/bin/snap-guest"
GUEST_TOOL = "/bin/guest-tool"
TICKER_FILE = "/tmp/ticker"
INFLIGHT_FILE = "/tmp/inflight"
GUEST_AGENT = "/sbin/supermachine-agent"
NIC = "eth0"
SOURCE_ADDR = "10.0.2.10/24"
CLOCK_TOLERANCE_NS = 1_000_000_000
SMPARK = boot.SMPARK_SYSFS
# Runs across the capture; guest seconds, which track the host's outside -icount.
SLEEPER = {"x86_64": ["/bin/busybox", "sleep", "4"], "aarch64": [GUEST_TOOL, "sleep", "4"]}


class QMP:
    """A minimal QMP client: one command at a time, events skipped."""

    def __init__(self, path, timeout):
        self.timeout = timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise boot.StepFailed(f"no QMP socket at {path} within {timeout} s")
                time.sleep(0.05)
        self.buf = b""
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except OSError as e:
                raise boot.StepFailed(f"QMP: {e}")
            if not data:
                raise boot.StepFailed("QMP: qemu closed the monitor")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise boot.StepFailed(f"QMP {name}: {r['error'].get('desc', r['error'])}")

    def close(self):
        self.sock.close()


class VM:
    """One qemu process: the boot test's command line plus QMP, a NIC, and optionally
    -S -incoming to restore a state file."""

    def __init__(self, t, name, incoming=None):
        self.t = t
        self.a = t.a
        self.name = name
        self.dir = os.path.join(t.tmp, name)
        os.mkdir(self.dir)
        self.sock = os.path.join(self.dir, "agent.sock")
        self.console = os.path.join(self.dir, "console.log")
        self.qemu_log = os.path.join(self.dir, "qemu.log")
        qmp = os.path.join(self.dir, "qmp.sock")
        argv = boot.build_qemu(self.a, self.dir, self.sock, self.console)
        argv += ["-qmp", f"unix:{qmp},server=on,wait=off",
                 "-netdev", "user,id=n0,restrict=on",
                 "-device", "virtio-net-device,netdev=n0"]
        if self.a.icount:
            argv += ["-icount", "shift=0,sleep=on"]
        if incoming:
            argv += ["-S", "-incoming", "exec:cat " + shlex.quote(incoming)]
        if self.a.verbose:
            print("  $ " + " ".join(shlex.quote(x) for x in argv), flush=True)
        self.t0 = time.monotonic()
        with open(self.qemu_log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        self.client = boot.Client(self.a.client, self.sock, self.a.timeout, self.a.verbose)
        self.qmp = None
        try:
            self.qmp = QMP(qmp, self.a.timeout)
        except boot.StepFailed:
            self.kill()
            raise boot.StepFailed(f"{name}: no QMP: qemu said: {boot.tail(self.qemu_log, 5)}")

    def alive(self):
        if self.proc.poll() is not None:
            raise boot.StepFailed(f"{self.name}: qemu exited with status {self.proc.returncode}")

    # -- the agent: every request the test makes goes through these two ---------------
    def agent(self, args, timeout=None):
        self.alive()
        return self.client.run(args, timeout=timeout)

    def guest(self, *argv, check=True):
        p = self.agent(["exec", "--"] + list(argv))
        if check and p.returncode != 0:
            raise boot.StepFailed(f"{self.name}: {' '.join(argv)}: " + boot.Client.describe(p))
        return p.stdout.decode(errors="replace").strip()

    def ping(self, wait=None):
        p = self.agent(["ping"] + (["--wait", str(wait)] if wait else []),
                       timeout=wait)
        if p.returncode != 0:
            self.alive()
            raise boot.StepFailed(f"{self.name}: ping: " + boot.Client.describe(p))
        kv = boot.parse_kv(p.stdout.decode(errors="replace"))
        return int(kv["uptime_ns"])

    def now(self):
        """(guest CLOCK_REALTIME - host CLOCK_REALTIME, guest CLOCK_BOOTTIME) in ns; the
        host's time is taken halfway through the request."""
        h0 = time.time_ns()
        kv = boot.parse_kv(self.guest(SNAP_GUEST, "now"))
        h1 = time.time_ns()
        return int(kv["realtime_ns"]) - (h0 + h1) // 2, int(kv["boottime_ns"])

    def icount(self):
        """Guest instructions executed so far (-icount only; QMP query-replay)."""
        return self.qmp.cmd("query-replay")["icount"]

    def quit(self):
        if self.proc.poll() is None:
            try:
                self.qmp.cmd("quit")
            except boot.StepFailed:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.qmp:
            self.qmp.close()
            self.qmp = None

    def report(self):
        print(f"--- {self.name}: serial console (tail) ---\n{boot.tail(self.console)}")
        q = boot.tail(self.qemu_log, 20)
        if q not in ("(empty)", "(no log)"):
            print(f"--- {self.name}: qemu output ---\n{q}")
        print("---", flush=True)


def post_restore(vm, hostname, cidr):
    """What a VMM sends a guest after a restore: one smk_agent_after_restore() call through
    the library's client (tests/snapshot/snap-host.c): the wall clock (the host's now), 64
    bytes of host entropy + a CRNG reseed, the hostname, the source's address replaced by
    the clone's and the link up."""
    vm.alive()
    argv = [vm.a.host, f"unix:{vm.sock}", "restore", "--hostname", hostname, "--ifname", NIC,
            "--old-addr", SOURCE_ADDR, "--addr", cidr]
    if vm.a.verbose:
        print("  $ " + " ".join(shlex.quote(x) for x in argv), flush=True)
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=vm.a.timeout + 10)
    except subprocess.TimeoutExpired:
        raise boot.StepFailed(f"{vm.name}: snap-host restore did not return")
    if p.returncode != 0:
        raise boot.StepFailed(f"{vm.name}: snap-host restore: " + boot.Client.describe(p))
    return boot.parse_kv(p.stdout.decode(errors="replace"))


class Test:
    def __init__(self, a, res):
        self.a = a
        self.res = res
        self.tmp = tempfile.mkdtemp(prefix="smk-snapshot-", dir=a.tmpdir)
        self.state = os.path.join(self.tmp, "state")
        self.vms = []
        self.figures = []

    def step(self, name, fn):
        try:
            msg = fn()
        except boot.StepFailed as e:
            self.res.fail(name, str(e))
            raise
        self.res.ok(name, msg)
        return msg

    def vm(self, name, incoming=None):
        v = VM(self, name, incoming)
        self.vms.append(v)
        return v

    # -- the source guest --------------------------------------------------------------
    def boot_source(self):
        src = self.vm("source")
        self.src = src
        up = src.ping(wait=round(self.a.timeout))
        self.ticker = src.guest(SNAP_GUEST, "ticker", TICKER_FILE)
        src.guest(SNAP_GUEST, "hostname", "source")
        src.guest(SNAP_GUEST, "addr", NIC, SOURCE_ADDR)
        return (f"agent up at guest uptime {boot.fmt_s(up)}; ticker pid {self.ticker}; "
                f"hostname source, {NIC} {SOURCE_ADDR}")

    def smpark_state(self, vm):
        return vm.guest(GUEST_TOOL, "cat", SMPARK + "/parked"), vm.guest(GUEST_TOOL, "cat", SMPARK + "/cpus")

    def capture(self, vm, before_stop=None, while_stopped=None):
        """The VMM's capture: refuses on aarch64 unless smpark has parked every other
        vCPU; then stop, migrate to a file, quit. while_stopped() runs between the stop and
        the migration, before_stop() right before the stop. Returns (seconds, bytes)."""
        if self.a.arch == "aarch64":
            if vm.agent(["exec", "--", GUEST_TOOL, "cat", SMPARK + "/version"]).returncode != 0:
                raise boot.StepFailed(f"refused: smpark is not loaded ({SMPARK} missing)")
            parked, cpus = self.smpark_state(vm)
            if parked != str(self.a.smp - 1):
                raise boot.StepFailed(f"refused: {SMPARK}/parked is {parked!r}, want "
                                      f"{self.a.smp - 1} (cpus: {' / '.join(cpus.splitlines())})")
        if before_stop:
            before_stop()
        t0 = time.monotonic()
        vm.qmp.cmd("stop")
        t_stop = time.monotonic() - t0
        if self.a.icount:
            self.icount_stop = vm.icount()
        if while_stopped:
            while_stopped()
        t1 = time.monotonic()
        vm.qmp.cmd("migrate", uri="exec:cat > " + shlex.quote(self.state))
        deadline = time.monotonic() + self.a.timeout
        while True:
            st = vm.qmp.cmd("query-migrate").get("status")
            if st == "completed":
                break
            if st in ("failed", "cancelled") or time.monotonic() > deadline:
                raise boot.StepFailed(f"migration status {st!r}")
            time.sleep(0.02)
        dt = t_stop + time.monotonic() - t1
        return dt, os.path.getsize(self.state)

    def s_no_park(self):
        try:
            self.capture(self.src)
        except boot.StepFailed as e:
            if str(e).startswith("refused:") and not os.path.exists(self.state):
                return f"capture without parking {e}"
            raise
        raise boot.StepFailed("a capture without parking was not refused")

    def s_park(self):
        src = self.src
        t0 = time.monotonic()
        src.guest(GUEST_TOOL, "write", SMPARK + "/park", "1")
        dt = time.monotonic() - t0
        parked, cpus = self.smpark_state(src)
        if parked != str(self.a.smp - 1):
            raise boot.StepFailed(f"parked={parked!r}, cpus={cpus!r}")
        return f"parked {parked} vCPU(s) in {dt * 1e3:.0f} ms (cpus: {' / '.join(cpus.splitlines())})"

    def s_capture(self):
        src = self.src
        if self.a.icount:
            # The same stop, connect, cont and answer on the source, with no restore between:
            # the baseline of the restore -> answer figure.
            # Three times: the guest's own timer work while the host is between steps
            # lands in each count.
            self.baseline_instr = []
            for _ in range(3):
                src.qmp.cmd("stop")
                i0 = src.icount()
                self.ping_on_cont(src)
                self.baseline_instr.append(src.icount() - i0)
        # A process running at the capture, its client (the library's) waiting for its exit:
        # that client must end with an error when the source qemu goes away; the clones take
        # the process over with ATTACH and see it exit.
        def spawn():
            self.spawned = subprocess.Popen([self.a.host, src.client.addr, "spawn", "--"] +
                                            SLEEPER[self.a.arch],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            line = self.spawned.stdout.readline().decode(errors="replace")
            kv = boot.parse_kv(line)
            if "proc" not in kv:
                self.spawned.kill()
                _, err = self.spawned.communicate()
                raise boot.StepFailed(f"spawn {' '.join(SLEEPER[self.a.arch])}: {line.strip()!r} "
                                      f"{err.decode(errors='replace').strip()}")
            self.spawned_proc, self.spawned_pid = kv["proc"], kv["pid"]

        # A request in flight at the capture: sent once the VM is stopped for it, so the
        # source never answers; its client must end with an error when the source qemu
        # goes away, not hang. (If qemu had already moved the bytes into guest memory, the
        # clones run it and their answer goes to whoever is connected then.)
        argv = [self.a.client, "client", src.client.addr, "exec", "--", SNAP_GUEST, "mark",
                INFLIGHT_FILE]

        def send():
            self.inflight = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.5)

        dt, size = self.capture(src, before_stop=spawn, while_stopped=send)
        self.capture_s, self.state_size = dt, size
        src.quit()
        self.figures.append(f"state file {size} bytes ({size / 2**20:.1f} MiB) for {self.a.mem} MiB "
                            f"of RAM; capture (stop + migrate to file) {dt:.2f} s wall")
        return f"stop + migrate to {os.path.basename(self.state)}: {size} bytes in {dt:.2f} s"

    def s_inflight(self):
        try:
            out, err = self.inflight.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.inflight.kill()
            self.inflight.communicate()
            raise boot.StepFailed("the client of the in-flight request still waits 30 s after "
                                  "its qemu went away")
        if self.inflight.returncode == 0:
            raise boot.StepFailed("the in-flight request reported success although its VM was "
                                  "stopped and quit before it finished")
        msg = err.decode(errors="replace").strip().splitlines()
        res = (f"a request sent to the stopped source: its client exited {self.inflight.returncode} "
               f"({msg[-1] if msg else 'no message'}) once the source qemu quit")
        try:
            out, err = self.spawned.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.spawned.kill()
            self.spawned.communicate()
            raise boot.StepFailed("the library client waiting for the spawned process still waits "
                                  "30 s after its qemu went away")
        if self.spawned.returncode == 0:
            raise boot.StepFailed(f"the spawned process's client reported an exit "
                                  f"({out.decode(errors='replace').strip()}) from a VM that was quit")
        msg = err.decode(errors="replace").strip().splitlines()
        return (res + f"; the library client waiting for process {self.spawned_proc} "
                f"(pid {self.spawned_pid}, {' '.join(SLEEPER[self.a.arch])}) exited "
                f"{self.spawned.returncode} ({msg[-1] if msg else 'no message'})")

    # -- a restored clone --------------------------------------------------------------
    def ping_on_cont(self, vm):
        """Connects a client to the stopped VM (its request waits in the chardev), resumes
        the VM and waits for the answer: the agent's first answer is to that request."""
        p = subprocess.Popen([self.a.client, "client", vm.client.addr, "ping", "--wait",
                              str(round(self.a.timeout))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.2)
        vm.qmp.cmd("cont")
        try:
            out, err = p.communicate(timeout=self.a.timeout + 10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise boot.StepFailed(f"{vm.name}: no agent answer within {self.a.timeout} s of cont")
        if p.returncode != 0:
            raise boot.StepFailed(f"{vm.name}: ping sent before cont: exit {p.returncode}, "
                                  f"{err.decode(errors='replace').strip()}")

    def restore(self, name):
        t0 = time.monotonic()
        vm = self.vm(name, incoming=self.state)
        deadline = time.monotonic() + self.a.timeout
        while True:
            st = vm.qmp.cmd("query-status")["status"]
            if st != "inmigrate":
                break
            vm.alive()
            if time.monotonic() > deadline:
                raise boot.StepFailed("the incoming migration did not finish")
            time.sleep(0.02)
        if st not in ("prelaunch", "paused"):
            raise boot.StepFailed(f"after the incoming migration the VM is {st!r}")
        t_loaded = time.monotonic() - t0
        if self.a.icount:
            vm.icount_loaded = vm.icount()
            if vm.icount_loaded != self.icount_stop:
                raise boot.StepFailed(f"{name}: instruction count {vm.icount_loaded} after the load, "
                                      f"{self.icount_stop} at the capture")
        self.ping_on_cont(vm)
        t_answer = time.monotonic() - t0
        if self.a.icount:
            vm.instr = vm.icount() - vm.icount_loaded
        vm.restore_s = (t_loaded, t_answer)
        msg = (f"state loaded {t_loaded:.2f} s after qemu start, agent answered {t_answer:.2f} s "
               f"after it")
        if self.a.icount:
            msg += (f"; {vm.instr} guest instructions from cont to the answer (instruction count "
                    f"at the load = at the capture, {self.icount_stop})")
        return vm, msg

    def s_unpark(self, vm):
        parked, cpus = self.smpark_state(vm)
        if parked != str(self.a.smp - 1):
            raise boot.StepFailed(f"restored with parked={parked!r} (want {self.a.smp - 1})")
        vm.guest(GUEST_TOOL, "write", SMPARK + "/park", "0")
        after, cpus2 = self.smpark_state(vm)
        if after != "0" or "parked" in cpus2:
            raise boot.StepFailed(f"after unpark parked={after!r}, cpus={cpus2!r}")
        return (f"restored with parked={parked} ({' / '.join(cpus.splitlines())}); unparked: "
                f"parked=0 ({' / '.join(cpus2.splitlines())})")

    def s_fix(self, vm, hostname, cidr):
        skew, _ = vm.now()
        vm.pre_random = vm.guest(SNAP_GUEST, "urandom", "32")
        kv = post_restore(vm, hostname, cidr)
        skew2, _ = vm.now()
        vm.skew = (skew, skew2)
        if self.a.icount:
            # While the guest runs, its clock advances one ns per instruction, not with the
            # host's: nothing to compare.
            return (f"smk_agent_after_restore (protocol {kv['proto']}) in {kv['after_restore_ms']} ms: "
                    f"clock set, reseeded with 64 host bytes, hostname {hostname}, {NIC} {cidr} "
                    f"(under -icount guest time does not follow the host: offset not checked)")
        if abs(skew2) > CLOCK_TOLERANCE_NS:
            raise boot.StepFailed(f"guest clock {skew2 / 1e9:+.3f} s off the host after settime")
        return (f"guest clock {skew / 1e9:+.3f} s off the host before, {skew2 / 1e9:+.3f} s after "
                f"smk_agent_after_restore (protocol {kv['proto']}, {kv['after_restore_ms']} ms): "
                f"clock, 64 host bytes + CRNG reseed, hostname {hostname}, {NIC} {SOURCE_ADDR} -> {cidr}")

    def s_checks(self, vm, hostname, cidr):
        a = boot.parse_kv(vm.guest(SNAP_GUEST, "alive", self.ticker, TICKER_FILE))
        time.sleep(0.5)
        b = boot.parse_kv(vm.guest(SNAP_GUEST, "alive", self.ticker, TICKER_FILE))
        if int(b["count"]) <= int(a["count"]):
            raise boot.StepFailed(f"ticker {self.ticker} did not advance: {a['count']} -> {b['count']}")
        name = vm.guest(SNAP_GUEST, "hostname")
        addr = vm.guest(SNAP_GUEST, "addr", NIC).split()
        if name != hostname or addr[1] != cidr.split("/")[0]:
            raise boot.StepFailed(f"hostname {name!r}, {NIC} {addr!r}")
        p = vm.agent(["exec", "--", GUEST_AGENT, "client", boot.VSOCK_LOOPBACK, "ping"])
        if p.returncode != 0 or "version" not in boot.parse_kv(p.stdout.decode(errors="replace")):
            raise boot.StepFailed("vsock listener: " + boot.Client.describe(p))
        vm.random = vm.guest(SNAP_GUEST, "urandom", "32")
        ran = vm.agent(["read", INFLIGHT_FILE]).returncode == 0
        try:
            p = subprocess.run([self.a.host, vm.client.addr, "attach", self.spawned_proc],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=self.a.timeout)
        except subprocess.TimeoutExpired:
            raise boot.StepFailed(f"attach {self.spawned_proc}: no exit within {self.a.timeout} s")
        att = boot.parse_kv(p.stdout.decode(errors="replace"))
        if p.returncode != 0 or att.get("exit") != "0" or att.get("pid") != self.spawned_pid:
            raise boot.StepFailed(f"attach {self.spawned_proc}: " + boot.Client.describe(p))
        return (f"process {self.spawned_proc} (pid {att['pid']}) spawned on the source taken over "
                f"with ATTACH, exited 0; the request sent to the stopped source "
                f"{'ran' if ran else 'never reached'} this clone; "
                f"ticker pid {self.ticker} alive (state {b['state']}, count {a['count']} -> "
                f"{b['count']}); hostname {name}; {NIC} {addr[1]}; vsock listener answers "
                f"({boot.VSOCK_LOOPBACK} from inside); virtio-serial answers")

    def clone(self, name, cidr):
        vm, msg = self.restore(name)
        self.res.ok(f"{name}: restore", msg)
        if self.a.arch == "aarch64":
            self.step(f"{name}: smpark unpark", lambda: self.s_unpark(vm))
        self.step(f"{name}: post-restore (time, entropy, identity)", lambda: self.s_fix(vm, name, cidr))
        self.step(f"{name}: checks", lambda: self.s_checks(vm, name, cidr))
        p = vm.agent(["shutdown"])
        if p.returncode != 0:
            raise boot.StepFailed(f"{name}: shutdown: " + boot.Client.describe(p))
        vm.proc.wait(timeout=self.a.timeout)
        vm.kill()
        return vm

    def s_clones_differ(self, a, b):
        if a.random == b.random:
            raise boot.StepFailed(f"both clones read {a.random} from /dev/urandom after the reseed")
        same = "the same bytes" if a.pre_random == b.pre_random else "different bytes"
        return (f"after the reseed {a.name} read {a.random[:16]}..., {b.name} {b.random[:16]}...; "
                f"before it, with the CRNG state of the capture, they read {same}")

    def run(self):
        ok = False
        try:
            self.step("boot source", self.boot_source)
            if self.a.arch == "aarch64":
                self.step("capture without smpark", self.s_no_park)
                self.step("smpark insmod", lambda: self.src.guest(GUEST_TOOL, "insmod", boot.SMPARK_KO)
                          or f"{boot.SMPARK_KO} loaded, {SMPARK}/parked reads "
                          f"{self.smpark_state(self.src)[0]}")
                self.step("capture without parking", self.s_no_park)
                self.step("smpark park", self.s_park)
            self.step("capture", self.s_capture)
            self.step("in-flight request", self.s_inflight)
            ca = self.clone("clone-a", "10.0.2.21/24")
            cb = self.clone("clone-b", "10.0.2.22/24")
            self.step("clones differ", lambda: self.s_clones_differ(ca, cb))
            for v in (ca, cb):
                f = (f"{v.name}: restore: state loaded {v.restore_s[0]:.2f} s, first agent answer "
                     f"{v.restore_s[1]:.2f} s after qemu start (wall)")
                if self.a.icount:
                    f += (f"; {v.instr} guest instructions from cont to the answer (the same stop, "
                          f"connect, cont and answer on the source, no restore, 3 times: "
                          f"{', '.join(str(n) for n in self.baseline_instr)})")
                else:
                    f += f"; guest clock {v.skew[0] / 1e9:+.3f} s off the host before the fix"
                self.figures.append(f)
            ok = True
        except boot.StepFailed:
            for v in self.vms:
                v.kill()
                v.report()
        finally:
            for v in self.vms:
                v.kill()
            if self.a.keep:
                print(f"  (kept {self.tmp})")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        for f in self.figures:
            print("figure: " + f)
        return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=["x86_64", "aarch64"])
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initramfs", required=True)
    ap.add_argument("--client", required=True, help="the host-built supermachine-agent (client mode)")
    ap.add_argument("--host", required=True, help="tests/snapshot/snap-host (the library's client)")
    ap.add_argument("--cmdline-file", required=True)
    ap.add_argument("--qemu")
    ap.add_argument("--smp", type=int)
    ap.add_argument("--mem", type=int, default=256, help="MiB (default 256)")
    ap.add_argument("--icount", action="store_true",
                    help="-icount shift=0,sleep=on -accel tcg,thread=single: count guest "
                         "instructions (QMP query-replay)")
    ap.add_argument("--timeout", type=float, default=90)
    ap.add_argument("--tmpdir", help="where the state file goes (default: the system's)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    if a.smp is None:
        a.smp = 2 if a.arch == "aarch64" else 1
    # What boot.build_qemu and boot.preflight read.
    a.accel = "tcg"
    a.tcg_thread = "single" if a.icount else None
    a.append = ""
    a.repeat = 1

    res = boot.Results()
    bad = boot.preflight(a)
    if not os.path.isfile(a.host) or not os.access(a.host, os.X_OK):
        bad.append(f"--host is not an executable: {a.host}")
    if a.arch == "aarch64" and a.smp < 2:
        bad.append("aarch64 needs --smp 2 or more: smpark must have a vCPU to park")
    try:
        with open(a.cmdline_file) as f:
            a.cmdline = " ".join(f.read().split())
    except OSError as e:
        bad.append(f"cannot read --cmdline-file: {e}")
    if bad:
        for b in bad:
            res.fail("preflight", b)
        print(f"{res.passed} passed, {res.failed} failed")
        return 1
    a.extras = boot.tcg_extras(a)
    print(f"snapshot: {a.arch} smp={a.smp} mem={a.mem}M icount={'yes' if a.icount else 'no'} "
          f"qemu={a.qemu}")
    print(f"snapshot: cmdline={boot.full_cmdline(a)}", flush=True)
    ok = Test(a, res).run()
    print(f"{res.passed} passed, {res.failed} failed")
    return 0 if ok and res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
