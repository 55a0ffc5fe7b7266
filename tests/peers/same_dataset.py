"""Exit 0 when each pair of files holds the same data set: same transfer
syntax, same elements and values, pixel data byte-identical (encapsulated
fragments included). Group lengths and trailing padding, which senders
may add or drop, are ignored.

usage: same_dataset.py SENT STORED [SENT STORED ...]
"""
import sys

import pydicom


def load(path):
    ds = pydicom.dcmread(path)
    for elem in list(ds):
        if elem.tag.element == 0x0000 or elem.tag == 0xFFFCFFFC:
            del ds[elem.tag]
    return ds


args = sys.argv[1:]
bad = 0
for sent, stored in zip(args[::2], args[1::2]):
    a, b = load(sent), load(stored)
    if a.file_meta.TransferSyntaxUID != b.file_meta.TransferSyntaxUID:
        print(f"{sent}: transfer syntax {a.file_meta.TransferSyntaxUID} stored as {b.file_meta.TransferSyntaxUID}")
        bad += 1
        continue
    # Values, not VRs: DCMTK corrects a wrong OW on encapsulated pixel data.
    diff = [str(e.tag) for e in a if e.tag not in b or b[e.tag].value != e.value]
    diff += [str(e.tag) + " (added)" for e in b if e.tag not in a]
    if diff:
        print(f"{sent}: data sets differ at {diff[:5]}")
        bad += 1
        continue
    if "PixelData" in a and a.PixelData != b.PixelData:
        print(f"{sent}: pixel data differs")
        bad += 1
sys.exit(1 if bad else 0)
