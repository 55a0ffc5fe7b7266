"""Generate synthetic DICOM instances for tests, deterministically.

usage: gen.py OUTDIR --count N [--studies S] [--rows R] [--cols C] [--ts UID]
              [--study-uid UID] [--accession A] [--patient-id ID]
              [--referring PN] [--description TEXT] [--body-part BP]
              [--institution NAME] [--station NAME]
              [--seed K] [--patient-name NAME] [--study-date DA] [--modality M]
              [--frames F [--frame-time MS] [--h264]] [--hours-apart H]
Writes one Part-10 file per instance and prints the number written.
--h264 makes each clip an MPEG-4 AVC video (High profile, with B-frames,
encoded by ffmpeg's libx264) split over two fragments.
"""
import argparse
import datetime
import os
import subprocess
import tempfile
import zlib

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


def frame(rows, cols, index, k, rng):
    """One frame: a ramp with a bright square that moves from frame to frame."""
    y, x = np.mgrid[0:rows, 0:cols]
    img = ((x * 7 + y * 3 + index * 11) % 4096).astype(np.uint16)
    img += rng.integers(0, 16, size=(rows, cols), dtype=np.uint16)
    side = max(2, rows // 4)
    top = (k * side // 2) % max(1, rows - side)
    img[top:top + side, top:top + side] = 4000
    return np.minimum(img, 4095)


def make_multiframe(ds, frames, frame_time, rng):
    """Turn a single-frame instance into a cine clip of `frames` frames."""
    ds.SOPClassUID = US_MULTIFRAME_STORAGE
    ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME_STORAGE
    ds.NumberOfFrames = frames
    ds.FrameTime = str(frame_time)
    ds.FrameIncrementPointer = 0x00181063
    data = b"".join(frame(ds.Rows, ds.Columns, 0, k, rng).tobytes() for k in range(frames))
    ds.PixelData = data
    if ds.file_meta.TransferSyntaxUID == RLELossless:
        # The single frame was compressed already: compress the clip instead.
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(RLELossless)


MPEG4_AVC_HIGH = "1.2.840.10008.1.2.4.102"


def make_video(ds, frames, frame_time):
    """Turn a single-frame instance into an H.264 clip of `frames` frames: a
    test pattern with a frame counter, so each frame differs and its order
    shows."""
    rate = 1000.0 / frame_time
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "clip.h264")
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-f", "lavfi",
             "-i", f"testsrc=size={ds.Columns}x{ds.Rows}:rate={rate}",
             "-frames:v", str(frames), "-c:v", "libx264", "-profile:v", "high", "-bf", "2",
             "-g", "12", "-pix_fmt", "yuv420p", "-f", "h264", out],
            check=True,
        )
        stream = open(out, "rb").read()
    from pydicom.encaps import encapsulate

    half = len(stream) // 2
    ds.SOPClassUID = US_MULTIFRAME_STORAGE
    ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME_STORAGE
    ds.file_meta.TransferSyntaxUID = MPEG4_AVC_HIGH
    ds.NumberOfFrames = frames
    ds.FrameTime = str(frame_time)
    ds.FrameIncrementPointer = 0x00181063
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    for k in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        if k in ds:
            delattr(ds, k)
    ds.PixelData = encapsulate([stream[:half], stream[half:]], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


def make(index, study_uid, series_uid, patient, rows, cols, rng, ts, study_date="20260101", modality="CT",
         sps_id="SPS-1", accession=None):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[study_uid, series_uid, str(index)])
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = patient[0]
    ds.PatientID = patient[1]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study_date
    ds.StudyTime = "120000"
    ds.AccessionNumber = accession or f"ACC{zlib.crc32(study_uid.encode()) % 100000:05d}"
    ds.StudyID = "1"
    ds.StudyDescription = "Synthetic CT"
    ds.Modality = modality
    ds.SeriesNumber = 1
    request = Dataset()
    request.ScheduledProcedureStepID = sps_id
    request.RequestedProcedureID = "RP-1"
    ds.RequestAttributesSequence = [request]
    ds.InstanceNumber = index + 1
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = frame(rows, cols, index, index, rng).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if ts == RLELossless:
        ds.compress(RLELossless)
    elif ts != ExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ts
    return ds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--studies", type=int, default=1)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--cols", type=int, default=64)
    p.add_argument("--ts", default=ExplicitVRLittleEndian)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--patient-name", default="Nguyễn^Văn")
    p.add_argument("--study-date", default="20260101")
    p.add_argument("--modality", default="CT")
    p.add_argument("--study-uid", help="StudyInstanceUID of the first study")
    p.add_argument("--accession", help="AccessionNumber of every study")
    p.add_argument("--patient-id", help="PatientID of every instance")
    p.add_argument("--referring", help="ReferringPhysicianName of every study")
    p.add_argument("--description", help="StudyDescription of every study")
    p.add_argument("--body-part", help="BodyPartExamined of every series")
    p.add_argument("--institution", help="InstitutionName of every instance")
    p.add_argument("--station", help="StationName of every instance")
    p.add_argument("--frames", type=int, default=1, help="a multi-frame ultrasound clip of this many frames")
    p.add_argument("--frame-time", type=float, default=40.0, help="FrameTime in ms of a clip")
    p.add_argument("--h264", action="store_true", help="clips as MPEG-4 AVC video (needs ffmpeg)")
    p.add_argument("--hours-apart", type=float,
                   help="AcquisitionDateTime of instance i is i times this many hours after the first")
    p.add_argument("--sps-id", default="SPS-1", help="ScheduledProcedureStepID in RequestAttributesSequence")
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    studies = [
        (generate_uid(entropy_srcs=[str(args.seed), "study", str(s)]),
         generate_uid(entropy_srcs=[str(args.seed), "series", str(s)]))
        for s in range(args.studies)
    ]
    if args.study_uid:
        studies[0] = (args.study_uid, studies[0][1])
    for i in range(args.count):
        study_uid, series_uid = studies[i % args.studies]
        patient = (args.patient_name, args.patient_id or f"PID{args.seed}-{i % args.studies}")
        ds = make(i, study_uid, series_uid, patient, args.rows, args.cols, rng, args.ts,
                  args.study_date, args.modality, args.sps_id, args.accession)
        if args.referring:
            ds.ReferringPhysicianName = args.referring
        if args.description:
            ds.StudyDescription = args.description
        if args.body_part:
            ds.BodyPartExamined = args.body_part
        if args.institution:
            ds.InstitutionName = args.institution
        if args.station:
            ds.StationName = args.station
        if args.frames > 1 and args.h264:
            make_video(ds, args.frames, args.frame_time)
        elif args.frames > 1:
            make_multiframe(ds, args.frames, args.frame_time, rng)
        if args.hours_apart is not None:
            # Written in reverse instance order, so only the time gives the order.
            at = datetime.datetime(2026, 1, 1, 8, 0) + datetime.timedelta(hours=args.hours_apart * i)
            ds.AcquisitionDateTime = at.strftime("%Y%m%d%H%M%S")
            ds.InstanceNumber = args.count - i
        little = ds.file_meta.TransferSyntaxUID != ExplicitVRBigEndian
        implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        ds.save_as(
            os.path.join(args.outdir, f"img{i:05d}.dcm"),
            enforce_file_format=True,
            implicit_vr=implicit,
            little_endian=little,
        )
    print(args.count)


if __name__ == "__main__":
    main()
