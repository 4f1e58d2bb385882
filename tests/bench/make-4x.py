#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""make-4x.py MANIFEST PACK OUT: a synthetic asset 4x the size of the largest real one.

The largest blob of MANIFEST is decoded (zstd -dc), concatenated 4 times and compressed with
the codec command of PACK (assets/pack, its CODEC_CMD: the settings the real blobs are packed
with), into OUT. The bench decodes it to show that the decoder's memory does not grow with the
asset. The copies are further apart than the codec's window, so it is no easier to compress
than four different files of that size.
"""
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import tempfile


def main():
    manifest, pack, out = sys.argv[1:4]
    loader = importlib.machinery.SourceFileLoader("smk_pack", pack)
    spec = importlib.util.spec_from_loader("smk_pack", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    # The sub-library's reader of its manifest: blobs/../tools/manifest.py.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(manifest)), "..", "tools"))
    import manifest as tables
    big = max(tables.read_manifest(manifest), key=lambda r: int(r["size"]))
    blob = os.path.join(os.path.dirname(manifest), big["blob"])
    data = subprocess.run(["zstd", "-dc", blob], check=True, capture_output=True).stdout
    env = {k: v for k, v in os.environ.items() if k not in mod.CODEC_ENV_DROP}
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(out))) as src:
        src.write(data * 4)
        src.flush()
        with open(out + ".tmp", "wb") as f:
            subprocess.run(mod.CODEC_CMD + [src.name], stdout=f, check=True, env=env)
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
