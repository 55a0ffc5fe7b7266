"""Exit 0 when each pair holds the same image: equal decoded pixel arrays,
and the second file in an uncompressed transfer syntax.

usage: same_pixels.py ORIGINAL TRANSCODED [ORIGINAL TRANSCODED ...]
"""
import sys

import numpy as np
import pydicom

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
args = sys.argv[1:]
bad = 0
for original, transcoded in zip(args[::2], args[1::2]):
    a, b = pydicom.dcmread(original), pydicom.dcmread(transcoded)
    if str(b.file_meta.TransferSyntaxUID) not in UNCOMPRESSED:
        print(f"{transcoded}: still in {b.file_meta.TransferSyntaxUID}")
        bad += 1
    elif not np.array_equal(a.pixel_array, b.pixel_array):
        print(f"{transcoded}: pixels differ from {original}")
        bad += 1
    elif a.SOPInstanceUID != b.SOPInstanceUID:
        print(f"{transcoded}: SOP Instance UID changed")
        bad += 1
sys.exit(1 if bad else 0)
