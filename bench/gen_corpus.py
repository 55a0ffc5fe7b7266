#!/usr/bin/env python3
"""Generate a synthetic DICOM corpus for the Tessera ingest benchmark.

    python3 bench/gen_corpus.py OUTDIR [--count N] [--seed S] [--jobs J]

Modality mix (by instance count):
  * CR  2048x2048, 16-bit allocated / 12 stored, unsigned      ~5 %
  * US  multi-frame, 20 frames 480x640 RGB 8-bit (cine)        ~2 %
  * CT  512x512, 16-bit signed (MONOCHROME2, HU values)         rest, ~55 %
  * MR  256x256, 16-bit allocated / 12 stored, unsigned         rest, ~45 %

Instances are grouped into patients / studies / series: CT and MR studies have
50-100 instances in 1-5 series, CR studies 1-4 images, US studies 1-5 cine
loops. Some patients have more than one study. Every UID comes from
pydicom.uid.generate_uid().

Each series uses one transfer syntax (as a modality would send it), assigned so
that instance shares approach Explicit VR LE 40 %, Implicit VR LE 25 %, RLE
Lossless 20 %, Deflated Explicit VR LE 15 % (as far as series granularity
allows); four different series get the four syntaxes first, so even a small
corpus exercises every one.

Pixel data is gradients + structures + fresh noise per instance, so RLE and
deflate see realistic (not trivially compressible) content.

Layout: OUTDIR/pNNNN/stNNNN/seNN/imNNNN.dcm, plus OUTDIR/manifest.json with
the counts. Needs numpy (RLE encoding uses pydicom's native encoder).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass, field

try:
    import numpy as np
except ImportError:  # pragma: no cover - environment check
    sys.exit("gen_corpus.py: numpy is required (pip install numpy)")

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "US": "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
}

TS_CHOICES = [
    (str(ExplicitVRLittleEndian), 0.40),
    (str(ImplicitVRLittleEndian), 0.25),
    (str(RLELossless), 0.20),
    (str(DeflatedExplicitVRLittleEndian), 0.15),
]
TS_NAME = {
    str(ExplicitVRLittleEndian): "ExplicitVRLittleEndian",
    str(ImplicitVRLittleEndian): "ImplicitVRLittleEndian",
    str(RLELossless): "RLELossless",
    str(DeflatedExplicitVRLittleEndian): "DeflatedExplicitVRLittleEndian",
}

# Patient names: mostly ASCII, some Latin-1 (the corpus is ISO_IR 100).
FAMILY = ["Smith", "Müller", "García", "Dubois", "Rossi", "Nowak", "Jensen",
          "O'Brien", "Schäfer", "Lefèvre", "Andersson", "Novák", "Silva",
          "Kowalski", "Meyer", "Brown", "Janssen", "Fernández", "Weiß", "Olsen"]
GIVEN = ["Anna", "Hans", "José", "Marie", "Luca", "Zofia", "Søren", "Liam",
         "Jürgen", "Chloé", "Erik", "Jana", "Ana", "Piotr", "Greta", "Noah",
         "Lotte", "Inés", "Björn", "Ida"]

CT_DESCR = ["CT CHEST W/O CONTRAST", "CT ABDOMEN PELVIS W CONTRAST",
            "CT HEAD W/O CONTRAST", "CT THORAX HR"]
MR_DESCR = ["MR BRAIN W/WO CONTRAST", "MR KNEE LEFT", "MR LUMBAR SPINE",
            "MR CERVICAL SPINE"]
CR_DESCR = ["XR CHEST PA/LAT", "XR HAND 3 VIEWS", "XR PELVIS AP"]
US_DESCR = ["US ABDOMEN COMPLETE", "US ECHO TTE", "US THYROID"]
MR_SERIES = ["T1 SAG", "T2 AX", "FLAIR AX", "T1 POST AX", "DWI", "PD FS COR"]
CT_SERIES = ["AXIAL 5mm", "AXIAL 1.25mm", "CORONAL MPR", "SAG MPR"]


@dataclass
class SeriesPlan:
    modality: str
    ts: str
    n: int
    seed: int
    series_number: int
    series_uid: str
    series_descr: str
    study_uid: str
    study_descr: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    patient_name: str
    patient_id: str
    patient_birth: str
    patient_sex: str
    frame_of_ref: str
    relpath: str
    sop_uids: list = field(default_factory=list)


def split(total: int, lo: int, hi: int, rng) -> list[int]:
    """Split total into chunks of lo..hi (the last one may be smaller)."""
    out = []
    while total > 0:
        size = int(min(total, rng.integers(lo, hi + 1)))
        if total - size < max(1, lo // 2):
            size = total  # don't leave a tiny leftover group
        out.append(size)
        total -= size
    return out


# Shares of instances: (CR, US, CT among the rest). "default" weighs the
# large objects more; "ct" is a radiology day's mix, mostly 0.5 MB CT slices.
MIXES = {"default": (0.05, 0.02, 0.55), "ct": (0.02, 0.005, 0.85)}


def make_plan(count: int, seed: int, mix: str = "default") -> list[SeriesPlan]:
    rng = np.random.default_rng(seed)
    cr_share, us_share, ct_share = MIXES[mix]
    n_cr = int(round(count * cr_share))
    n_us = int(round(count * us_share))
    if count >= 20:
        n_cr, n_us = max(n_cr, 1), max(n_us, 1)
    n_rest = count - n_cr - n_us

    # (modality, instance count) per study
    studies: list[tuple[str, int]] = []
    if 2 <= n_rest < 100:  # small corpus: still one CT and one MR study
        sizes = [(n_rest + 1) // 2, n_rest // 2]
    else:
        sizes = split(n_rest, 50, 100, rng)
    for i, size in enumerate(sizes):
        mod = ("CT", "MR")[i] if i < 2 else ("CT" if rng.random() < ct_share else "MR")
        studies.append((mod, size))
    studies += [("CR", s) for s in split(n_cr, 1, 4, rng)]
    studies += [("US", s) for s in split(n_us, 1, 5, rng)]
    order = rng.permutation(len(studies))
    studies = [studies[i] for i in order]

    base_date = dt.date(2024, 1, 1)
    plans: list[SeriesPlan] = []
    patient = None
    pat_no = 0
    for st_no, (mod, n_inst) in enumerate(studies, start=1):
        # ~25 % of studies reuse the previous patient (follow-up study)
        if patient is None or rng.random() >= 0.25:
            pat_no += 1
            fam = FAMILY[int(rng.integers(len(FAMILY)))]
            giv = GIVEN[int(rng.integers(len(GIVEN)))]
            birth = base_date - dt.timedelta(days=int(rng.integers(365 * 5, 365 * 90)))
            patient = {
                "name": f"{fam}^{giv}",
                "id": f"PAT{seed:02d}{pat_no:05d}",
                "birth": birth.strftime("%Y%m%d"),
                "sex": "F" if rng.random() < 0.5 else "M",
                "dir": f"p{pat_no:04d}",
            }
        sdate = base_date + dt.timedelta(days=int(rng.integers(0, 365)))
        stime = f"{int(rng.integers(7, 19)):02d}{int(rng.integers(60)):02d}{int(rng.integers(60)):02d}"
        study_uid = generate_uid()
        descr = {"CT": CT_DESCR, "MR": MR_DESCR, "CR": CR_DESCR, "US": US_DESCR}[mod]
        study_descr = descr[int(rng.integers(len(descr)))]
        frame_of_ref = generate_uid()
        if mod == "CT":
            sizes = split(n_inst, 20, 60, rng) if n_inst > 40 else [n_inst]
        elif mod == "MR":
            sizes = split(n_inst, 15, 30, rng)
        elif mod == "CR":
            sizes = split(n_inst, 1, 2, rng)
        else:
            sizes = [n_inst]
        for se_no, n_se in enumerate(sizes, start=1):
            if mod == "CT":
                sdescr = CT_SERIES[(se_no - 1) % len(CT_SERIES)]
            elif mod == "MR":
                sdescr = MR_SERIES[(se_no - 1) % len(MR_SERIES)]
            else:
                sdescr = f"{mod} {se_no}"
            plans.append(SeriesPlan(
                modality=mod, ts="", n=n_se, seed=int(rng.integers(2**31)),
                series_number=se_no, series_uid=generate_uid(), series_descr=sdescr,
                study_uid=study_uid, study_descr=study_descr,
                study_date=sdate.strftime("%Y%m%d"), study_time=stime,
                accession=f"ACC{seed:02d}{st_no:06d}", study_id=str(st_no),
                patient_name=patient["name"], patient_id=patient["id"],
                patient_birth=patient["birth"], patient_sex=patient["sex"],
                frame_of_ref=frame_of_ref,
                relpath=os.path.join(patient["dir"], f"st{st_no:04d}", f"se{se_no:02d}"),
                sop_uids=[generate_uid() for _ in range(n_se)],
            ))

    # One transfer syntax per series. Series are visited in random order and
    # each gets the syntax furthest below its target share of instances; the
    # first four visited get four different syntaxes, so all four occur.
    target = {t: w * count for t, w in TS_CHOICES}
    assigned = {t: 0 for t, _ in TS_CHOICES}
    for i in rng.permutation(len(plans)):
        unused = [t for t in assigned if assigned[t] == 0]
        cands = unused or list(assigned)
        best = max(cands, key=lambda t: (target[t] - assigned[t], rng.random()))
        plans[i].ts = best
        assigned[best] += plans[i].n
    return plans


# ---------------------------------------------------------------- pixel data

def grid(rows: int, cols: int):
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    return yy / rows - 0.5, xx / cols - 0.5  # -0.5 .. 0.5


def ct_pixels(rng, k: int, n: int) -> np.ndarray:
    y, x = grid(512, 512)
    z = k / max(n - 1, 1)
    cx, cy = 0.02 * np.sin(6 * z), 0.03 * np.cos(4 * z)
    r = np.sqrt(((x - cx) / 0.42) ** 2 + ((y - cy) / 0.32) ** 2)
    img = np.full((512, 512), -1000.0, np.float32)  # air
    body = r < 1.0
    img[body] = 40.0 + 120.0 * (x[body] + 0.5) - 60.0 * y[body]  # soft tissue gradient
    for (ox, oy, rad, hu) in ((-0.18, 0.0, 0.10, -850.0), (0.18, 0.0, 0.10, -850.0),
                              (0.0, 0.15, 0.045, 700.0), (0.05, -0.1, 0.06, 60.0)):
        m = ((x - cx - ox) ** 2 + (y - cy - oy) ** 2) < (rad * (0.8 + 0.4 * z)) ** 2
        img[m] = hu + 30.0 * np.sin(20 * x[m] + 10 * z)
    img += rng.normal(0.0, 12.0, img.shape).astype(np.float32)
    img[(x ** 2 + y ** 2) > 0.245] = -2000.0  # outside the reconstruction circle
    return np.clip(img, -2048, 3071).astype(np.int16)


def mr_pixels(rng, k: int, n: int) -> np.ndarray:
    y, x = grid(256, 256)
    z = k / max(n - 1, 1)
    r = np.sqrt((x / 0.38) ** 2 + (y / (0.45 - 0.1 * abs(z - 0.5))) ** 2)
    img = np.zeros((256, 256), np.float32)
    head = r < 1.0
    img[head] = 900.0 + 1400.0 * (1.0 - r[head]) + 300.0 * np.sin(14 * x[head] + 6 * z) * np.cos(9 * y[head])
    img[(r > 0.92) & head] = 2600.0  # scalp / fat
    noise = np.abs(rng.normal(0.0, 25.0, img.shape) + 1j * rng.normal(0.0, 25.0, img.shape))
    img += noise.astype(np.float32)  # Rician-like background
    return np.clip(img, 0, 4095).astype(np.uint16)


def cr_pixels(rng, k: int, n: int) -> np.ndarray:
    y, x = grid(2048, 2048)
    img = 2600.0 - 1800.0 * np.exp(-((np.abs(x) - 0.2) ** 2 / 0.02 + (y + 0.05) ** 2 / 0.08))
    img += 400.0 * y + 150.0 * np.cos(30 * y + k) * (np.abs(x) < 0.08)  # spine-ish band
    img = img.astype(np.float32) + rng.normal(0.0, 15.0, img.shape).astype(np.float32)
    img[(np.abs(x) > 0.46) | (np.abs(y) > 0.47)] = 0.0  # collimation
    return np.clip(img, 0, 4095).astype(np.uint16)


def us_pixels(rng, k: int, n: int, frames: int = 20) -> np.ndarray:
    rows, cols = 480, 640
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    ang = np.arctan2(xx - cols / 2, yy + 40.0)
    rad = np.hypot(xx - cols / 2, yy + 40.0)
    fan = (np.abs(ang) < 0.7) & (rad > 60) & (rad < 470)
    out = np.zeros((frames, rows, cols, 3), np.uint8)
    for f in range(frames):
        phase = 2 * np.pi * (f / frames) + k
        tissue = 90 + 50 * np.sin(rad / 25.0 + phase) * np.cos(ang * 6)
        speckle = rng.rayleigh(22.0, (rows, cols)).astype(np.float32)
        gray = np.clip((tissue + speckle) * fan, 0, 255).astype(np.uint8)
        out[f] = gray[..., None]
        # colour Doppler box
        y0, x0 = 180 + int(20 * np.sin(phase)), 280
        box = out[f, y0:y0 + 80, x0:x0 + 90]
        flow = rng.integers(0, 2, (80, 90)).astype(bool)
        box[flow] = (200, 30, 30)
        box[~flow & (rng.random((80, 90)) < 0.3)] = (30, 60, 210)
        out[f, 10:30, 20:200] = 230  # burned-in annotation bar
    return out


# ---------------------------------------------------------------- datasets

def build_dataset(p: SeriesPlan, k: int, rng) -> tuple[Dataset, np.ndarray]:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if p.modality == "CT" else "OTHER"]
    ds.SOPClassUID = SOP_CLASS[p.modality]
    ds.SOPInstanceUID = p.sop_uids[k]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = p.study_date
    ds.StudyTime = p.study_time
    ds.SeriesTime = ds.ContentTime = f"{p.study_time[:4]}{(int(p.study_time[4:]) + p.series_number) % 60:02d}"
    ds.AccessionNumber = p.accession
    ds.Modality = p.modality
    ds.Manufacturer = "TesseraBench"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyDescription = p.study_descr
    ds.SeriesDescription = p.series_descr
    ds.PatientName = p.patient_name
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.patient_birth
    ds.PatientSex = p.patient_sex
    ds.StudyInstanceUID = p.study_uid
    ds.SeriesInstanceUID = p.series_uid
    ds.StudyID = p.study_id
    ds.SeriesNumber = p.series_number
    ds.InstanceNumber = k + 1

    if p.modality == "CT":
        ds.BodyPartExamined = "CHEST"
        ds.KVP = "120"
        ds.SliceThickness = "1.25"
        ds.FrameOfReferenceUID = p.frame_of_ref
        ds.ImagePositionPatient = ["-250", "-250", f"{-k * 1.25:.2f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{-k * 1.25:.2f}"
        ds.PixelSpacing = ["0.9765625", "0.9765625"]
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        arr = ct_pixels(rng, k, p.n)
        photometric, bits_stored, signed = "MONOCHROME2", 16, 1
    elif p.modality == "MR":
        ds.BodyPartExamined = "HEAD"
        ds.MagneticFieldStrength = "1.5"
        ds.SliceThickness = "4"
        ds.FrameOfReferenceUID = p.frame_of_ref
        ds.ImagePositionPatient = ["-120", "-120", f"{k * 4.4:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["0.9375", "0.9375"]
        ds.EchoTime = "12"
        ds.RepetitionTime = "500"
        arr = mr_pixels(rng, k, p.n)
        photometric, bits_stored, signed = "MONOCHROME2", 12, 0
    elif p.modality == "CR":
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "PA" if k % 2 == 0 else "LL"
        ds.ImagerPixelSpacing = ["0.139", "0.139"]
        arr = cr_pixels(rng, k, p.n)
        photometric, bits_stored, signed = "MONOCHROME2", 12, 0
    else:  # US multi-frame RGB
        ds.BodyPartExamined = "ABDOMEN"
        arr = us_pixels(rng, k, p.n)
        ds.NumberOfFrames = arr.shape[0]
        ds.FrameTime = "33.3"
        ds.CineRate = 30
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
        ds.PlanarConfiguration = 0
        photometric, bits_stored, signed = "RGB", 8, 0

    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = arr.shape[-3:-1] if photometric == "RGB" else arr.shape
    ds.BitsAllocated = 8 if photometric == "RGB" else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = signed

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "TESSERA_BENCH"
    ds.file_meta = meta
    return ds, arr


def write_series(args) -> tuple[int, int, dict]:
    p_dict, outdir = args
    p = SeriesPlan(**p_dict)
    rng = np.random.default_rng(p.seed)
    sdir = os.path.join(outdir, p.relpath)
    os.makedirs(sdir, exist_ok=True)
    total = 0
    for k in range(p.n):
        ds, arr = build_dataset(p, k, rng)
        if p.ts == str(RLELossless):
            ds.compress(RLELossless, arr, encoding_plugin="pydicom", generate_instance_uid=False)
        else:
            ds.PixelData = arr.tobytes()
            ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
            ds.file_meta.TransferSyntaxUID = p.ts
        path = os.path.join(sdir, f"im{k + 1:04d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        total += os.path.getsize(path)
    return p.n, total, {"modality": p.modality, "ts": TS_NAME[p.ts]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--count", type=int, default=1000, help="number of instances (default 1000)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed for layout and pixels (UIDs are always fresh)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--force", action="store_true", help="allow a non-empty OUTDIR")
    ap.add_argument("--mix", choices=sorted(MIXES), default="default",
                    help="modality mix: default, or ct (mostly 0.5 MB CT slices)")
    a = ap.parse_args()
    if a.count < 1:
        ap.error("--count must be >= 1")
    if os.path.isdir(a.outdir) and os.listdir(a.outdir) and not a.force:
        ap.error(f"{a.outdir} is not empty (use --force to write into it anyway)")
    os.makedirs(a.outdir, exist_ok=True)

    t0 = time.monotonic()
    plans = make_plan(a.count, a.seed, a.mix)
    jobs = [(asdict(p), a.outdir) for p in plans]
    # biggest series first so workers finish together
    weight = {"CT": 1, "MR": 0.3, "CR": 16, "US": 40}
    jobs.sort(key=lambda j: -j[0]["n"] * weight[j[0]["modality"]])

    n_files = n_bytes = 0
    by_mod: dict[str, int] = {}
    by_ts: dict[str, int] = {}
    with mp.Pool(max(1, a.jobs)) as pool:
        for n, b, info in pool.imap_unordered(write_series, jobs):
            n_files += n
            n_bytes += b
            by_mod[info["modality"]] = by_mod.get(info["modality"], 0) + n
            by_ts[info["ts"]] = by_ts.get(info["ts"], 0) + n
            print(f"\r{n_files}/{a.count} instances", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    manifest = {
        "instances": n_files,
        "bytes": n_bytes,
        "patients": len({p.patient_id for p in plans}),
        "studies": len({p.study_uid for p in plans}),
        "series": len(plans),
        "by_modality": dict(sorted(by_mod.items())),
        "by_transfer_syntax": dict(sorted(by_ts.items())),
        "seed": a.seed,
        "pydicom": pydicom.__version__,
    }
    with open(os.path.join(a.outdir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"wrote {n_files} instances, {n_bytes} bytes ({n_bytes / 1e6:.1f} MB) "
          f"in {manifest['patients']} patients / {manifest['studies']} studies / "
          f"{manifest['series']} series to {a.outdir} in {time.monotonic() - t0:.1f}s")
    print("by modality:", manifest["by_modality"])
    print("by transfer syntax:", manifest["by_transfer_syntax"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
