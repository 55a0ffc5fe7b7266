"""Generate files for transfer syntaxes no sample wheel ships, from a JPEG
2000 sample: its encapsulated pixel data is kept and the syntax relabelled
(HTJ2K, JPEG 2000 Part 2), or replaced by a synthetic bitstream (JPEG
process 14, MPEG-2, MPEG-4, HEVC). An archive stores these as received, so
the bytes only need to be well-formed DICOM.

usage: relabel.py OUTDIR J2K_SAMPLE
"""
import os
import sys

import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

out, sample = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)

RELABEL = {
    "htj2k_lossless": "1.2.840.10008.1.2.4.201",
    "htj2k_rpcl": "1.2.840.10008.1.2.4.202",
    "htj2k": "1.2.840.10008.1.2.4.203",
    "j2k_part2_lossless": "1.2.840.10008.1.2.4.92",
    "j2k_part2": "1.2.840.10008.1.2.4.93",
}
SYNTHETIC = {
    "jpeg_p14": "1.2.840.10008.1.2.4.57",
    "mpeg2_main": "1.2.840.10008.1.2.4.100",
    "mpeg4_avc": "1.2.840.10008.1.2.4.102",
    "hevc_main": "1.2.840.10008.1.2.4.107",
}

for name, ts in list(RELABEL.items()) + list(SYNTHETIC.items()):
    ds = pydicom.dcmread(sample)
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[name])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ts
    if name in SYNTHETIC:
        ds.PixelData = encapsulate([bytes(range(256)) * 4 + name.encode().ljust(8, b"_")])
        if ts != "1.2.840.10008.1.2.4.57":
            ds.NumberOfFrames = 1
    ds.save_as(os.path.join(out, f"{name}.dcm"), enforce_file_format=True)
print(len(RELABEL) + len(SYNTHETIC))
