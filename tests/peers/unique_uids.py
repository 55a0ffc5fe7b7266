"""Copy sample files into OUTDIR, giving each a SOP Instance UID of its own
(several pydicom samples share one) while keeping its transfer syntax and
encapsulated pixel data untouched. Missing study/series UIDs are filled in.

usage: unique_uids.py OUTDIR FILE...
"""
import os
import sys

import pydicom
from pydicom.uid import generate_uid

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for path in sys.argv[2:]:
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[os.path.basename(path)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    # A few samples lack the Type 1 study/series UIDs an archive requires.
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if keyword not in ds:
            setattr(ds, keyword, generate_uid(entropy_srcs=[keyword, os.path.basename(path)]))
    ts = ds.file_meta.TransferSyntaxUID
    ds.save_as(
        os.path.join(out, os.path.basename(path)),
        enforce_file_format=True,
        implicit_vr=ts.is_implicit_VR,
        little_endian=ts.is_little_endian,
    )
print(len(sys.argv) - 2)
