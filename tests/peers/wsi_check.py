"""Read a stored whole-slide image back through DICOMweb as slide viewers do.

usage: wsi_check.py BASE STUDY SERIES DIR
BASE is the server root (http://127.0.0.1:PORT); DIR holds the files
gen_wsi.py wrote. Prints JSON of what was found:

- "regions": for each (level, x, y, w, h), the largest per-pixel difference
  between wsidicom's DICOMweb client reading Tessera and wsidicom reading
  the original files (same JPEG tiles, so 0 when every tile is right);
- "sparse": frames and plane positions of the TILED_SPARSE level's
  metadata, and whether PerFrameFunctionalGroupsSequence came inline;
- "icc": whether the ICC profile is a BulkDataURI whose bytes are the
  profile in the file;
- "accept": for each Accept header, the status and whether the body held
  frame 1 as stored;
- "label", "overview": the size of the rendered image for a viewport.
"""
import io
import json
import sys

import numpy as np
import pydicom
import requests
from PIL import Image
from pydicom.encaps import generate_frames
from wsidicom import WsiDicom, WsiDicomWebClient

base, study, series, folder = sys.argv[1:5]
web = f"{base}/dicom-web"
report = {}

local = WsiDicom.open(folder)
remote = WsiDicom.open_web(WsiDicomWebClient.create_client(web), study, [series])
regions = {}
for level, x, y, w, h in [(0, 200, 150, 400, 300), (1, 50, 20, 500, 300), (2, 0, 0, 384, 256)]:
    a = np.asarray(local.read_region((x, y), level, (w, h)), dtype=int)
    b = np.asarray(remote.read_region((x, y), level, (w, h)), dtype=int)
    regions[f"{level}:{x},{y},{w}x{h}"] = int(np.abs(a - b).max()) if a.shape == b.shape else f"{a.shape} vs {b.shape}"
report["regions"] = regions
report["remote_levels"] = [[lv.size.width, lv.size.height] for lv in remote.levels]
report["label_equal"] = bool(np.array_equal(np.asarray(local.read_label()), np.asarray(remote.read_label())))

files = {pydicom.dcmread(f"{folder}/{n}", stop_before_pixels=True).ImageType[2] + str(i): f"{folder}/{n}"
         for i, n in enumerate(["level0.dcm", "level1.dcm", "level2.dcm", "label.dcm", "overview.dcm"])}
sparse = pydicom.dcmread(f"{folder}/level1.dcm")
path = f"{web}/studies/{study}/series/{series}/instances/{sparse.SOPInstanceUID}"
meta = requests.get(f"{path}/metadata", headers={"Accept": "application/dicom+json"}, timeout=30).json()[0]
per_frame = meta.get("52009230", {})
items = per_frame.get("Value", [])
positions = [
    (i["0048021A"]["Value"][0]["0048021E"]["Value"][0], i["0048021A"]["Value"][0]["0048021F"]["Value"][0])
    for i in items
    if "0048021A" in i
]
expected = [(p.PlanePositionSlideSequence[0].ColumnPositionInTotalImagePixelMatrix,
             p.PlanePositionSlideSequence[0].RowPositionInTotalImagePixelMatrix)
            for p in sparse.PerFrameFunctionalGroupsSequence]
report["sparse"] = {
    "inline": "Value" in per_frame and "BulkDataURI" not in per_frame,
    "frames": int(sparse.NumberOfFrames),
    "positions_match": positions == expected,
    "dimension_organization": meta.get("00209311", {}).get("Value", [None])[0],
}

icc_element = meta["00480105"]["Value"][0].get("00282000", {})
icc = {"bulk": "BulkDataURI" in icc_element}
if icc["bulk"]:
    got = requests.get(icc_element["BulkDataURI"], headers={"Accept": "application/octet-stream"}, timeout=30)
    body = got.content
    if got.headers.get("Content-Type", "").startswith("multipart/related"):
        body = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
    icc["same"] = body == sparse.OpticalPathSequence[0].ICCProfile
report["icc"] = icc

first = next(generate_frames(sparse.PixelData, number_of_frames=int(sparse.NumberOfFrames)))
accepts = {
    "jpeg_then_any": 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50, '
                     'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    "unsupported_then_jpeg": 'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.80, '
                             'multipart/related; type="image/jpeg"',
    "octet_any": 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    "jp2_only": 'multipart/related; type="image/jp2"',
}
report["accept"] = {}
for name, accept in accepts.items():
    got = requests.get(f"{path}/frames/1", headers={"Accept": accept}, timeout=30)
    report["accept"][name] = {
        "status": got.status_code,
        "type": got.headers.get("Content-Type", ""),
        "as_stored": first in got.content,
    }

for kind, n in (("label", "LABEL3"), ("overview", "OVERVIEW4")):
    ds = pydicom.dcmread(files[n], stop_before_pixels=True)
    url = f"{web}/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}/rendered"
    got = requests.get(url, params={"viewport": "150,100"}, headers={"Accept": "image/jpeg"}, timeout=30)
    size = list(Image.open(io.BytesIO(got.content)).size) if got.ok else None
    report[kind] = {"status": got.status_code, "type": got.headers.get("Content-Type"), "size": size}

print(json.dumps(report))
