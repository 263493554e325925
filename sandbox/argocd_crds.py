"""Extract Argo CD's Application and AppProject CRDs from its Go module zip, after checking the zip's h1 hash.

Usage: argocd_crds.py ZIP EXPECTED_H1 MODULE@VERSION OUT_DIR

`go mod download` verifies the zip against the checksum database and then refuses to extract it (the module asks for
a newer Go); this recomputes go.sum's h1 hash (golang.org/x/mod/sumdb/dirhash Hash1: SHA-256 over the sorted
"<sha256 hex>  <name>" lines of every file in the zip) so a zip that is not the pinned one is never used.
"""

import base64
import hashlib
import os
import sys
import zipfile

CRDS = ("manifests/crds/application-crd.yaml", "manifests/crds/appproject-crd.yaml")


def hash1(archive):
    summary = hashlib.sha256()
    for name in sorted(archive.namelist()):
        summary.update(("%s  %s\n" % (hashlib.sha256(archive.read(name)).hexdigest(), name)).encode("utf-8"))
    return "h1:" + base64.b64encode(summary.digest()).decode("ascii")


def main(zip_path, expected, module, out):
    with zipfile.ZipFile(zip_path) as archive:
        actual = hash1(archive)
        if actual != expected:
            sys.exit("argocd_crds: %s has hash %s, not the pinned %s; refusing to use it" % (zip_path, actual, expected))
        os.makedirs(out, exist_ok=True)
        for crd in CRDS:
            with open(os.path.join(out, os.path.basename(crd)), "wb") as handle:
                handle.write(archive.read("%s/%s" % (module, crd)))
    print("argocd_crds: %s verified (%s); %s extracted to %s" % (module, actual, ", ".join(CRDS), out))


if __name__ == "__main__":
    main(*sys.argv[1:5])
