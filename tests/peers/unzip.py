"""Download a ZIP over HTTP (or open a saved one), check every entry's
CRC, and extract it.

usage: unzip.py URL|FILE OUTDIR
Prints JSON: {"status", "content_type", "disposition", "names"}; "names"
only for a 200. Exit 1 when the archive is damaged.
"""
import json
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

url, outdir = sys.argv[1], sys.argv[2]
try:
    rsp = urllib.request.urlopen(url, timeout=60) if url.startswith("http") else open(url, "rb")
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code}))
    sys.exit(0)
if not url.startswith("http"):
    rsp.status = 200
    rsp.headers = {}
report = {
    "status": rsp.status,
    "content_type": rsp.headers.get("Content-Type"),
    "disposition": rsp.headers.get("Content-Disposition"),
}
with tempfile.TemporaryFile() as spool:
    shutil.copyfileobj(rsp, spool)
    with zipfile.ZipFile(spool) as archive:
        bad = archive.testzip()
        if bad is not None:
            report["damaged"] = bad
            print(json.dumps(report))
            sys.exit(1)
        report["names"] = archive.namelist()
        archive.extractall(outdir)
print(json.dumps(report))
