#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""check-symbols.py LIB LIST: the library's exported symbols must be exactly those in LIST.

An accidental export, or a lost or renamed entry point, fails the test with the difference.
readelf reads any ELF whatever the build machine, so cross builds are checked too.
"""
import subprocess
import sys

lib, listing = sys.argv[1], sys.argv[2]
out = subprocess.run(["readelf", "--dyn-syms", "--wide", lib], check=True, capture_output=True,
                     text=True).stdout
exported = set()
for line in out.splitlines():
    f = line.split()
    # Num: Value Size Type Bind Vis Ndx Name
    if len(f) >= 8 and f[4] in ("GLOBAL", "WEAK") and f[5] == "DEFAULT" and f[6] != "UND":
        exported.add(f[7].split("@")[0])
with open(listing, encoding="utf-8") as fh:
    want = {l.strip() for l in fh if l.strip() and not l.startswith("#")}
extra, missing = sorted(exported - want), sorted(want - exported)
for s in extra:
    print(f"exported but not in {listing}: {s}")
for s in missing:
    print(f"listed in {listing} but not exported: {s}")
print(f"{len(exported)} symbols exported, {len(want)} listed")
sys.exit(1 if extra or missing else 0)
