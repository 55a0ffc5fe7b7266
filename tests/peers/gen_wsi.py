"""Generate a small whole-slide image as a DICOM pyramid, deterministically.

usage: gen_wsi.py OUTDIR [--width W] [--height H] [--tile T] [--study-uid UID]
                  [--patient-id ID] [--factors 1,2,4]

Writes one VL Whole Slide Microscopy Image per pyramid level (JPEG baseline
tiles, 4:2:2), level 0 TILED_FULL, level 1 TILED_SPARSE (a plane position
per frame, the background tiles left out), the others TILED_FULL, plus a
LABEL and an OVERVIEW image, all in one series. Prints JSON: the study and
series UIDs, the files, and each level's size and tile count.
"""
import argparse
import io
import json
import os

import numpy as np
from PIL import Image, ImageCms, ImageDraw
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, generate_uid

WSI_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.6"
SPACING_MM = 0.00025  # 0.25 µm at level 0


def tissue(width, height):
    """White glass with pink and purple stained blobs."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.full((height, width, 3), 245.0, dtype=np.float32)
    rng = np.random.default_rng(7)
    for _ in range(14):
        cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
        r = rng.uniform(0.05, 0.16) * min(width, height)
        blob = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)))
        color = np.array(rng.choice([[200, 80, 160], [120, 60, 170], [230, 140, 190]]), dtype=np.float32)
        img = img * (1 - blob[..., None]) + color * blob[..., None]
    # Fine stripes, so that levels and tiles differ in detail.
    img[(x.astype(int) // 8 + y.astype(int) // 8) % 13 == 0] *= 0.9
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg(pixels):
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "JPEG", quality=90, subsampling=1)
    return out.getvalue()


def base_dataset(args, study_uid, series_uid, frame_of_reference, icc, image_type, number):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = WSI_STORAGE
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[study_uid, "wsi", str(number)])
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PatientName = "Slide^Test"
    ds.PatientID = args.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20260301"
    ds.StudyTime = "090000"
    ds.AccessionNumber = "ACC-WSI"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic slide"
    ds.Modality = "SM"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Manufacturer = "Tessera tests"
    ds.ContentDate = "20260301"
    ds.ContentTime = "090000"
    ds.AcquisitionDateTime = "20260301090000"
    ds.ImageType = image_type
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.VolumetricProperties = "VOLUME"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "YES" if image_type[2] == "LABEL" else "NO"
    ds.SpecimenLabelInImage = "YES" if image_type[2] in ("LABEL", "OVERVIEW") else "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompressionRatio = 10
    ds.ContainerIdentifier = "SLIDE-1"
    ds.IssuerOfTheContainerIdentifierSequence = []
    ds.ContainerTypeCodeSequence = [code("433466003", "SCT", "Microscope slide")]
    specimen = Dataset()
    specimen.SpecimenIdentifier = "SPECIMEN-1"
    specimen.SpecimenUID = generate_uid(entropy_srcs=[study_uid, "specimen"])
    specimen.IssuerOfTheSpecimenIdentifierSequence = []
    specimen.SpecimenPreparationSequence = []
    ds.SpecimenDescriptionSequence = [specimen]
    ds.NumberOfOpticalPaths = 1
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    path.IlluminationTypeCodeSequence = [code("111744", "DCM", "Brightfield illumination")]
    path.IlluminationColorCodeSequence = [code("414298005", "SCT", "Full Spectrum")]
    path.ICCProfile = icc
    ds.OpticalPathSequence = [path]
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20
    origin.YOffsetInSlideCoordinateSystem = 40
    ds.TotalPixelMatrixOriginSequence = [origin]
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = WSI_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return ds


def code(value, scheme, meaning):
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def shared_groups(spacing, frame_type):
    measures = Dataset()
    measures.PixelSpacing = [round(spacing, 9), round(spacing, 9)]
    measures.SliceThickness = 0.001
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    kind = Dataset()
    kind.FrameType = frame_type
    group = Dataset()
    group.PixelMeasuresSequence = [measures]
    group.OpticalPathIdentificationSequence = [path]
    group.WholeSlideMicroscopyImageFrameTypeSequence = [kind]
    return [group]


def level(args, pixels, spacing, sparse, ds):
    height, width = pixels.shape[:2]
    t = args.tile
    across, down = -(-width // t), -(-height // t)
    padded = np.full((down * t, across * t, 3), 255, dtype=np.uint8)
    padded[:height, :width] = pixels
    frames, positions = [], []
    for row in range(down):
        for col in range(across):
            tile = padded[row * t:(row + 1) * t, col * t:(col + 1) * t]
            stain = tile.max(axis=2).astype(int) - tile.min(axis=2)
            if sparse and stain.max() < 16:
                continue  # glass only: a sparse level leaves it out
            frames.append(jpeg(tile))
            positions.append((col * t + 1, row * t + 1))
    ds.Rows = t
    ds.Columns = t
    ds.TotalPixelMatrixColumns = width
    ds.TotalPixelMatrixRows = height
    ds.ImagedVolumeWidth = width * spacing
    ds.ImagedVolumeHeight = height * spacing
    ds.ImagedVolumeDepth = 0.001
    ds.NumberOfFrames = len(frames)
    ds.DimensionOrganizationType = "TILED_SPARSE" if sparse else "TILED_FULL"
    ds.SharedFunctionalGroupsSequence = shared_groups(spacing, ds.ImageType)
    if sparse:
        per_frame = []
        for column, row in positions:
            plane = Dataset()
            plane.ColumnPositionInTotalImagePixelMatrix = column
            plane.RowPositionInTotalImagePixelMatrix = row
            # ImageOrientationSlide 0\-1\0\-1\0\0: columns run along -Y, rows along -X.
            plane.XOffsetInSlideCoordinateSystem = round(20 - (row - 1) * spacing, 6)
            plane.YOffsetInSlideCoordinateSystem = round(40 - (column - 1) * spacing, 6)
            plane.ZOffsetInSlideCoordinateSystem = 0
            item = Dataset()
            item.PlanePositionSlideSequence = [plane]
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    return {"width": width, "height": height, "frames": len(frames), "tiles_across": across,
            "tiles_down": down, "sparse": sparse, "sop_instance_uid": ds.SOPInstanceUID}


def single(ds, pixels):
    height, width = pixels.shape[:2]
    ds.Rows = height
    ds.Columns = width
    ds.TotalPixelMatrixColumns = width
    ds.TotalPixelMatrixRows = height
    ds.NumberOfFrames = 1
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SharedFunctionalGroupsSequence = shared_groups(SPACING_MM * 40, ds.ImageType)
    ds.ImagedVolumeWidth = width * SPACING_MM * 40
    ds.ImagedVolumeHeight = height * SPACING_MM * 40
    ds.ImagedVolumeDepth = 0.001
    ds.PixelData = encapsulate([jpeg(pixels)])
    ds["PixelData"].VR = "OB"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("--width", type=int, default=1536)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--factors", default="1,2,4")
    p.add_argument("--study-uid")
    p.add_argument("--patient-id", default="WSI-1")
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    study_uid = args.study_uid or generate_uid(entropy_srcs=["wsi-study", str(args.width)])
    series_uid = generate_uid(entropy_srcs=[study_uid, "wsi-series"])
    frame_of_reference = generate_uid(entropy_srcs=[study_uid, "wsi-frame"])
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    base = tissue(args.width, args.height)
    report = {"study": study_uid, "series": series_uid, "files": [], "levels": [], "icc_bytes": len(icc)}
    for n, factor in enumerate(int(f) for f in args.factors.split(",")):
        size = (max(1, args.width // factor), max(1, args.height // factor))
        pixels = base if factor == 1 else np.asarray(Image.fromarray(base).resize(size, Image.BOX))
        image_type = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if factor == 1 else \
            ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
        ds = base_dataset(args, study_uid, series_uid, frame_of_reference, icc, image_type, n + 1)
        info = level(args, pixels, SPACING_MM * factor, n == 1, ds)
        info["factor"] = factor
        report["levels"].append(info)
        path = os.path.join(args.outdir, f"level{n}.dcm")
        ds.save_as(path, enforce_file_format=True)
        report["files"].append(path)
    for n, (kind, size) in enumerate([("LABEL", (300, 200)), ("OVERVIEW", (480, 180))], start=10):
        picture = Image.new("RGB", size, (250, 250, 250))
        draw = ImageDraw.Draw(picture)
        draw.rectangle([10, 10, size[0] - 10, size[1] - 10], outline=(20, 20, 20), width=4)
        draw.text((30, 30), f"{kind} {args.patient_id}", fill=(0, 0, 0))
        if kind == "OVERVIEW":
            small = Image.fromarray(base).resize((size[1] * 3 // 2, size[1] - 40), Image.BOX)
            picture.paste(small, (size[0] - small.width - 20, 20))
        ds = base_dataset(args, study_uid, series_uid, frame_of_reference, icc,
                          ["ORIGINAL", "PRIMARY", kind, "NONE"], n)
        single(ds, np.asarray(picture))
        path = os.path.join(args.outdir, f"{kind.lower()}.dcm")
        ds.save_as(path, enforce_file_format=True)
        report["files"].append(path)
        report[kind.lower()] = {"sop_instance_uid": ds.SOPInstanceUID, "width": size[0], "height": size[1]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
