#!/usr/bin/env python3
"""Write a deterministic multi-frame 16-bit CT object of about 10 MiB.

Used by tests/it/s3.rs: anything above 8 MiB goes to S3 as a multipart upload.
Same arguments, same bytes: UIDs, dates and pixels are fixed.

    python3 make_large_ct.py OUT.dcm [--frames N]
"""

import argparse

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
# Fixed UIDs under the 2.25 (UUID-derived) root.
ROOT = "2.25.314159265358979323846264338327950288"
STUDY_UID = ROOT + ".1"
SERIES_UID = ROOT + ".2"
SOP_UID = ROOT + ".3"
FRAME_OF_REFERENCE_UID = ROOT + ".4"
ROWS = COLUMNS = 512


def pixels(frames: int) -> np.ndarray:
    """A smooth, frame-varying 12-bit pattern; no randomness."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.uint32)
    stack = np.empty((frames, ROWS, COLUMNS), dtype=np.uint16)
    for f in range(frames):
        stack[f] = ((x * 7 + y * 13 + f * 101 + (x * y) // 97) % 4096).astype(np.uint16)
    return stack


def build(frames: int) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = SOP_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + ".99"
    meta.ImplementationVersionName = "TESSERA_TEST"

    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.SOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    ds.SOPInstanceUID = SOP_UID
    ds.StudyDate = "20240101"
    ds.ContentDate = "20240101"
    ds.StudyTime = "120000"
    ds.ContentTime = "120000"
    ds.AcquisitionDateTime = "20240101120000"
    ds.AccessionNumber = "LARGE0001"
    ds.Modality = "CT"
    ds.Manufacturer = "Tessera test suite"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Large multi-frame CT for multipart upload"
    ds.SeriesDescription = "20 frames 512x512 16-bit"
    ds.PatientName = "Large^Object"
    ds.PatientID = "LARGE-CT-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels(frames).tobytes()
    return ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    ds = build(args.frames)
    # pydicom 3 spells it enforce_file_format; 2.x used write_like_original.
    try:
        pydicom.dcmwrite(args.out, ds, enforce_file_format=True)
    except TypeError:
        ds.save_as(args.out, write_like_original=False)


if __name__ == "__main__":
    main()
