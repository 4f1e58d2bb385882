#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""check-subproject.py SUBPROJECT_DIR: the per-arch sub-library on its own, in a temp copy.

1. It configures, builds and passes its own tests standalone (no facade around it).
2. Changing a blob rebuilds it: the kernel blob is recompressed at another zstd level (same
   decompressed bytes, different embedded bytes; the manifest's blob_size updated), `ninja`
   rebuilds, and the library's SHA-256 changes. A hand-written .S with .incbin would not.
3. A blob that does not match its manifest stops the build with a clear message: one flipped
   byte, then a truncated blob.
4. Built anyway (-Dblobcheck=false) from a blob with a flipped byte (in the frame header, the
   middle, the checksum at the end) or a truncated one, the library returns -EBADMSG from
   every call that reads the asset and writes nothing (tests/corrupt-probe.c checks each).
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

passed = failed = 0


def step(ok, what):
    global passed, failed
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if ok:
        passed += 1
    else:
        failed += 1
    return ok


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def flip(data, at):
    data = bytearray(data)
    data[at] ^= 0x55
    return bytes(data)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    src = os.path.abspath(sys.argv[1])
    name = os.path.basename(src)
    with tempfile.TemporaryDirectory(prefix="smk-standalone-") as tmp:
        sub = os.path.join(tmp, name)
        shutil.copytree(src, sub, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
        build = os.path.join(tmp, "build")
        r = run(["meson", "setup", build, sub])
        if not step(r.returncode == 0, f"{name} configures standalone"):
            print(r.stdout[-3000:], r.stderr[-3000:])
            return
        r = run(["meson", "test", "-C", build, "--print-errorlogs"])
        step(r.returncode == 0, f"{name} builds and passes its own tests standalone")
        if r.returncode:
            print(r.stdout[-4000:])
        lib = os.path.join(build, f"lib{name}.so")
        before = sha(lib)

        blobs = os.path.join(sub, "blobs")
        manifest = os.path.join(blobs, "MANIFEST.tsv")
        sys.path.insert(0, os.path.join(src, "tools"))
        import manifest as tables  # the sub-library's reader of its manifest
        rows = tables.read_manifest(manifest)
        kernel = next(r for r in rows if r["name"] == "kernel")
        blob = os.path.join(blobs, kernel["blob"])
        raw = subprocess.run(["zstd", "-dc", blob], capture_output=True, check=True)
        redo = subprocess.run(["zstd", "-3", "-c", "-q"], input=raw.stdout, capture_output=True)
        with open(blob, "wb") as f:
            f.write(redo.stdout)
        kernel["blob_size"] = str(len(redo.stdout))
        with open(manifest, "w", encoding="utf-8") as f:
            f.write(tables.manifest_text(rows))
        r = run(["ninja", "-C", build])
        after = sha(lib) if os.path.exists(lib) else ""
        step(r.returncode == 0 and after and after != before,
             f"recompressed kernel blob rebuilds the library (sha256 {before[:12]} -> {after[:12]})")
        r = run(["meson", "test", "-C", build, "api"])
        step(r.returncode == 0, "the rebuilt library still passes its API tests")

        data = bytearray(redo.stdout)
        data[len(data) // 2] ^= 0x55
        with open(blob, "wb") as f:
            f.write(data)
        r = run(["ninja", "-C", build])
        out = r.stdout + r.stderr
        step(r.returncode != 0 and ("does not match its manifest" in out or "corrupt" in out),
             "a flipped byte in a blob fails the build: " +
             next((l.strip() for l in out.splitlines() if "blobcheck:" in l), "(no message)"))
        with open(blob, "wb") as f:
            f.write(redo.stdout[:-100])
        r = run(["ninja", "-C", build])
        out = r.stdout + r.stderr
        step(r.returncode != 0 and "does not match its manifest" in out,
             "a truncated blob fails the build: " +
             next((l.strip() for l in out.splitlines() if "blobcheck:" in l), "(no message)"))

        # 4. The same corruption in a library built without blobcheck: caught at run time.
        r = run(["meson", "configure", build, "-Dblobcheck=false"])
        step(r.returncode == 0, "reconfigures with -Dblobcheck=false")
        probe = os.path.join(build, "tests", "corrupt-probe")
        good = {}
        for row in rows:
            with open(os.path.join(blobs, row["blob"]), "rb") as f:
                good[row["name"]] = f.read()
        good["kernel"] = redo.stdout
        agent = next(r for r in rows if r["name"] == "supermachine-agent")
        cases = [("kernel", "a flipped byte in the frame header", lambda d: flip(d, 5)),
                 ("kernel", "a flipped byte in the middle", lambda d: flip(d, len(d) // 2)),
                 ("kernel", "a flipped byte in the checksum", lambda d: flip(d, len(d) - 2)),
                 ("kernel", "a truncated blob", lambda d: d[:-100]),
                 ("kernel", "a blob cut to its first 1000 bytes", lambda d: d[:1000]),
                 ("supermachine-agent", "a flipped byte in the middle",
                  lambda d: flip(d, len(d) // 2))]
        for asset, what, corrupt in cases:
            row = kernel if asset == "kernel" else agent
            path = os.path.join(blobs, row["blob"])
            for name, data in good.items():  # every other blob intact again
                other = next(r for r in rows if r["name"] == name)
                with open(os.path.join(blobs, other["blob"]), "wb") as f:
                    f.write(data)
            with open(path, "wb") as f:
                f.write(corrupt(good[asset]))
            r = run(["ninja", "-C", build])
            if not step(r.returncode == 0, f"{asset} with {what}: builds without blobcheck"):
                print(r.stdout[-2000:], r.stderr[-2000:])
                continue
            r = run([probe, asset])
            ok = step(r.returncode == 0,
                      f"{asset} with {what}: -EBADMSG from decompress, stream, extract, "
                      "asset_path, initramfs; nothing written")
            if not ok:
                print(r.stdout, r.stderr)


if __name__ == "__main__":
    main()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
