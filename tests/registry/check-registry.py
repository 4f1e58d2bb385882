#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""check-registry.py ROOT ARCH [PROBE]: every place that lists the guest assets agrees with
assets/registry.tsv, or this says what is missing where.

  - each sub-library present: blobs/registry.tsv is the registry's copy (assets/pack writes it),
    blobs/MANIFEST.tsv lists that arch's assets in order with their files and modes, and enum
    smk_asset_id in include/smkernel-common.h gives each asset SMK_ASSET_<NAME> = its id;
  - each asset's component has an executable assets/<component>/build;
  - tests/abi/<arch>.symbols names smk_extract_<asset>_to* only for assets that arch ships;
  - with PROBE (tests/registry/probe.c, linked against the library): the library ships exactly
    ARCH's assets with their ids, files and modes, and its initramfs holds each asset at the
    registry's path.
A cross build runs PROBE through SMK_TEST_WRAPPER (the cross file's exe wrapper).
"""
import os
import re
import subprocess
import sys
import tempfile

root, arch = sys.argv[1], sys.argv[2]
probe = sys.argv[3] if len(sys.argv) > 3 else None
subs = [a for a in ("x86_64", "aarch64") if os.path.isdir(os.path.join(root, "subprojects",
                                                                          f"smkernel-{a}"))]
sys.path.insert(0, os.path.join(root, "subprojects", f"smkernel-{subs[0]}", "tools"))
import manifest  # noqa: E402  (the sub-library's reader of the manifest and the registry)

bad = []
registry_path = os.path.join(root, "assets", "registry.tsv")
try:
    assets = manifest.read_registry(registry_path)
except manifest.Error as e:
    sys.exit(f"FAIL {e}")
with open(registry_path, "rb") as f:
    registry_bytes = f.read()

for a in subs:
    sub = os.path.join(root, "subprojects", f"smkernel-{a}")
    copy = os.path.join(sub, "blobs", "registry.tsv")
    if not os.path.isfile(copy) or open(copy, "rb").read() != registry_bytes:
        bad.append(f"smkernel-{a}/blobs/registry.tsv is not assets/registry.tsv: run "
                   f"assets/pack {a} assets/.work/out/{a} subprojects/smkernel-{a}/blobs")
    mpath = os.path.join(sub, "blobs", "MANIFEST.tsv")
    try:
        bad += manifest.check_against(manifest.read_manifest(mpath), assets, a,
                                      f"smkernel-{a}/blobs/MANIFEST.tsv")
    except manifest.Error as e:
        bad.append(str(e))
    with open(os.path.join(sub, "include", "smkernel-common.h"), encoding="utf-8") as f:
        header = f.read()
    body = re.search(r"enum smk_asset_id \{(.*?)\};", header, re.S)
    enum = dict((k, int(v)) for k, v in re.findall(r"(SMK_ASSET_\w+) = (\d+)",
                                                   body.group(1) if body else ""))
    want = {x["enum"]: x["id"] for x in assets}
    for k, v in want.items():
        if enum.get(k) != v:
            bad.append(f"smkernel-{a}/include/smkernel-common.h: enum smk_asset_id needs "
                       f"{k} = {v} (assets/registry.tsv)")
    for k in enum.keys() - want.keys():
        bad.append(f"smkernel-{a}/include/smkernel-common.h: {k} is in enum smk_asset_id but "
                   "not in assets/registry.tsv")
    count = re.search(r"#define SMK_ASSET_ID_COUNT (\d+)", header)
    if not count or int(count.group(1)) != len(assets):
        bad.append(f"smkernel-{a}/include/smkernel-common.h: SMK_ASSET_ID_COUNT must be "
                   f"{len(assets)}")

for x in assets:
    build = os.path.join(root, "assets", x["component"], "build")
    if not os.access(build, os.X_OK):
        bad.append(f"assets/registry.tsv: {x['name']} is made by assets/{x['component']}/build, "
                   "which does not exist or is not executable")

symbols = os.path.join(root, "tests", "abi", f"{arch}.symbols")
if os.path.isfile(symbols):
    with open(symbols, encoding="utf-8") as f:
        names = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    for x in assets:
        mine = {n for n in names if re.fullmatch(
            rf"smk_extract_{manifest.ident(x['name'])}_to(_with_parents)?", n)}
        if mine and arch not in x["arches"]:
            bad.append(f"tests/abi/{arch}.symbols: {', '.join(sorted(mine))}: {arch} does not "
                       f"ship {x['name']}")

if probe:
    wrapper = os.environ.get("SMK_TEST_WRAPPER", "").split()
    with tempfile.TemporaryDirectory(prefix="smk-registry-") as tmp:
        r = subprocess.run(wrapper + [probe, os.path.join(tmp, "initramfs")],
                           capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL registry-probe: exit {r.returncode}: {r.stderr.strip()}")
    lines = [line.split("\t") for line in r.stdout.splitlines()]
    have = [(int(c[1]), c[2], c[3], c[4]) for c in lines if c[0] == "asset"]
    ship = manifest.for_arch(assets, arch)
    want = [(x["id"], x["name"], x["files"][arch], x["mode"]) for x in ship]
    if have != want:
        bad.append(f"the {arch} library ships {have}; the registry says {want}")
    initramfs = {c[1]: c[2] for c in lines if c[0] == "initramfs"}
    for x in ship:
        if x["initramfs"] and initramfs.get(x["initramfs"]) != x["mode"]:
            bad.append(f"the {arch} initramfs has no {x['initramfs']} mode {x['mode']} "
                       f"({x['name']}, assets/registry.tsv)")

for b in bad:
    print("FAIL " + b)
if not bad:
    print(f"registry: {len(assets)} assets; sub-libraries {', '.join(subs)}, the ABI list"
          + (f" and the {arch} library" if probe else "") + " agree with it")
sys.exit(1 if bad else 0)
