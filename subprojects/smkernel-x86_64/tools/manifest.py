#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The one reader (and writer) of the two asset tables, for every Python tool of the project.

blobs/MANIFEST.tsv   one row a packed blob (assets/pack writes it): MANIFEST_COLUMNS.
blobs/registry.tsv   assets/registry.tsv as assets/pack copied it: every guest asset, its enum
                     id, file, mode, arches, initramfs path and component (REGISTRY_COLUMNS).

Both are TAB-separated, a header line first (the column names), '#' lines and blank lines
ignored. Errors name the file and line. Used as a module (gen-embed.py beside it; assets/pack
and the top-level tools load it from the sub-library present) or from the shell:

    manifest.py MANIFEST.tsv [COLUMN...]   print those columns of every row (all by default)
    manifest.py --registry REGISTRY ARCH   print name, file and component of ARCH's assets
"""
import re
import sys

MANIFEST_COLUMNS = ["name", "file", "blob", "size", "blob_size", "sha256", "mode", "version",
                    "license", "source"]
REGISTRY_COLUMNS = ["name", "id", "file", "mode", "arches", "initramfs", "component"]
ARCHES = ("x86_64", "aarch64")
# The codec of a blob, by its file name's ending (assets/pack names them, gen-embed records the
# codec in the asset table, decode.c and blobcheck.c decode it): zstd alone, or zstd over the
# ARM64 branch filter (assets/README.md, "The a64 filter"). Longest ending first.
BLOB_CODECS = ((".a64.zst", "a64+zstd"), (".zst", "zstd"))


class Error(Exception):
    """A table that does not read; str() says where and why."""


def _rows(path, columns):
    """[(line number, {column: cell})] of a TAB-separated table with exactly these columns."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(n, line.rstrip("\n")) for n, line in enumerate(f, 1)
                     if line.strip() and not line.startswith("#")]
    except OSError as e:
        raise Error(f"{path}: {e.strerror}") from None
    if not lines or lines[0][1].split("\t") != columns:
        raise Error(f"{path}: the first line must be the header: {' '.join(columns)}")
    rows = []
    for n, line in lines[1:]:
        cells = line.split("\t")
        if len(cells) != len(columns):
            raise Error(f"{path}:{n}: {len(cells)} columns, want {len(columns)}")
        rows.append((n, dict(zip(columns, cells))))
    return rows


def read_manifest(path):
    """The rows of a MANIFEST.tsv as dicts (every value a string), checked for form."""
    rows = []
    for n, r in _rows(path, MANIFEST_COLUMNS):
        if not re.fullmatch(r"[0-9a-f]{64}", r["sha256"]):
            raise Error(f"{path}:{n}: sha256 must be 64 lowercase hex digits")
        if not re.fullmatch(r"0[0-7]{3}", r["mode"]):
            raise Error(f"{path}:{n}: mode must be octal like 0755")
        for k in ("size", "blob_size"):
            if not r[k].isdigit():
                raise Error(f"{path}:{n}: {k} must be a decimal number")
        if "/" in r["blob"] or r["blob"].startswith("."):
            raise Error(f"{path}:{n}: blob must be a file name in the manifest's directory")
        rows.append(r)
    return rows


def codec_of(blob):
    """The codec of a blob file name by its ending, or None for an ending no decoder knows."""
    return next((codec for end, codec in BLOB_CODECS if blob.endswith(end)), None)


def manifest_text(rows):
    """MANIFEST.tsv's bytes for these rows (dicts with every column)."""
    lines = ["\t".join(MANIFEST_COLUMNS)] + ["\t".join(r[c] for c in MANIFEST_COLUMNS)
                                              for r in rows]
    return "".join(line + "\n" for line in lines)


def ident(name):
    """The C identifier part of an asset name: smpark.ko -> smpark_ko."""
    return re.sub(r"[^A-Za-z0-9]", "_", name)


def enum_name(name):
    return "SMK_ASSET_" + ident(name).upper()


def read_registry(path):
    """The assets of a registry.tsv, in id order: dicts with name, id (int), files ({arch:
    file}), mode, arches (list), initramfs (a path or None), component, enum."""
    assets, names, ids = [], set(), set()
    for n, r in _rows(path, REGISTRY_COLUMNS):
        where = f"{path}:{n}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", r["name"]):
            raise Error(f"{where}: name {r['name']!r}: lowercase letters, digits, '.' and '-'")
        if r["name"] in names:
            raise Error(f"{where}: {r['name']} is listed twice")
        if not r["id"].isdigit() or int(r["id"]) in ids:
            raise Error(f"{where}: id {r['id']!r} must be a number no other asset has")
        arches = r["arches"].split(",")
        if not arches or any(a not in ARCHES for a in arches):
            raise Error(f"{where}: arches {r['arches']!r}: a comma-separated list of "
                        f"{', '.join(ARCHES)}")
        files = {}
        for f in r["file"].split(" "):
            arch, _, fname = f.rpartition(":")
            for a in ([arch] if arch else arches):
                if a not in arches or a in files:
                    raise Error(f"{where}: file {r['file']!r}: one name, or ARCH:NAME once for "
                                "each of its arches")
                files[a] = fname
        if set(files) != set(arches) or not all(re.fullmatch(r"[A-Za-z0-9._-]+", f)
                                                 for f in files.values()):
            raise Error(f"{where}: file {r['file']!r}: a plain file name for each of its arches")
        if not re.fullmatch(r"0[0-7]{3}", r["mode"]):
            raise Error(f"{where}: mode must be octal like 0755")
        initramfs = None if r["initramfs"] == "-" else r["initramfs"]
        if initramfs is not None and not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", initramfs):
            raise Error(f"{where}: initramfs {initramfs!r}: an absolute guest path, or -")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", r["component"]):
            raise Error(f"{where}: component {r['component']!r}: a directory name under assets/")
        names.add(r["name"])
        ids.add(int(r["id"]))
        assets.append({"name": r["name"], "id": int(r["id"]), "files": files, "mode": r["mode"],
                       "arches": arches, "initramfs": initramfs, "component": r["component"],
                       "enum": enum_name(r["name"])})
    if [a["id"] for a in assets] != list(range(len(assets))):
        raise Error(f"{path}: the ids must be 0, 1, 2, ... in line order")
    return assets


def for_arch(assets, arch):
    """The registry's assets that arch ships, in id order."""
    return [a for a in assets if arch in a["arches"]]


def check_against(manifest_rows, assets, arch, manifest="MANIFEST.tsv"):
    """Complaints (strings) where a manifest of arch and the registry disagree."""
    bad = []
    want = for_arch(assets, arch)
    have = [r["name"] for r in manifest_rows]
    if have != [a["name"] for a in want]:
        bad.append(f"{manifest} lists {', '.join(have) or 'nothing'}; the registry says {arch} "
                   f"ships {', '.join(a['name'] for a in want)} in that order (run assets/pack)")
    for r in manifest_rows:
        a = next((a for a in want if a["name"] == r["name"]), None)
        if a and (r["file"], r["mode"]) != (a["files"][arch], a["mode"]):
            bad.append(f"{manifest}: {r['name']} is {r['file']} mode {r['mode']}; the registry "
                       f"says {a['files'][arch]} mode {a['mode']}")
    return bad


def main(argv):
    usage = "usage: manifest.py MANIFEST.tsv [COLUMN...] | manifest.py --registry REGISTRY ARCH"
    if argv[:1] == ["--registry"]:
        if len(argv) != 3 or argv[2] not in ARCHES:
            sys.exit(usage)
        try:
            assets = for_arch(read_registry(argv[1]), argv[2])
        except Error as e:
            sys.exit(f"manifest.py: {e}")
        for a in assets:
            print(f"{a['name']}\t{a['files'][argv[2]]}\t{a['component']}")
        return
    if not argv or argv[0].startswith("-"):
        sys.exit(usage)
    try:
        rows = read_manifest(argv[0])
    except Error as e:
        sys.exit(f"manifest.py: {e}")
    cols = argv[1:] or MANIFEST_COLUMNS
    unknown = [c for c in cols if c not in MANIFEST_COLUMNS]
    if unknown:
        sys.exit(f"manifest.py: no column {', '.join(unknown)} (have: {' '.join(MANIFEST_COLUMNS)})")
    for r in rows:
        print("\t".join(r[c] for c in cols))


if __name__ == "__main__":
    main(sys.argv[1:])
