#!/usr/bin/env python3
"""Write one whole-slide image instance with many JPEG tiles, streamed, for
the large-object ingest benchmark.

    python3 bench/make_wsi.py OUT [--tiles 80000] [--tile 512] [--variants 64]

The default is 80,000 tiles of 512x512 RGB, about 21 gigapixels, as one VL
Whole Slide Microscopy instance (TILED_FULL) in JPEG Baseline with a Basic
Offset Table. Tiles are real JPEG images (tissue-like noise on white); a
pool of `--variants` tiles is encoded once and repeated, so generating is
fast and the file size is what a scanner's would be for similar content.
Prints the file size.
"""

import argparse
import io
import struct

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import JPEGBaseline8Bit, generate_uid

VL_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"


def tile_pool(n: int, size: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    pool = []
    for k in range(n):
        img = np.full((size, size, 3), 240, np.uint8)
        if k % 4:  # three tiles in four hold tissue
            blob = rng.normal(0, 1, (size // 16, size // 16, 3))
            blob = np.kron(blob, np.ones((16, 16, 1)))
            tissue = np.clip(170 + 40 * blob + rng.normal(0, 12, blob.shape), 0, 255)
            img = tissue.astype(np.uint8)
            img[..., 1] = (img[..., 1] * 0.7).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(img).save(out, format="JPEG", quality=80)
        data = out.getvalue()
        pool.append(data + b"\0" * (len(data) % 2))
    return pool


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tiles", type=int, default=80_000)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--variants", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    pool = tile_pool(a.variants, a.tile, a.seed)
    across = int(np.ceil(np.sqrt(a.tiles)))
    ds = Dataset()
    ds.SOPClassUID = VL_WHOLE_SLIDE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Slide^Bench"
    ds.PatientID = "WSI-BENCH"
    ds.Modality = "SM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns = across * a.tile
    ds.TotalPixelMatrixRows = across * a.tile
    ds.Rows = a.tile
    ds.Columns = a.tile
    ds.NumberOfFrames = a.tiles
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = JPEGBaseline8Bit

    item = lambda length: struct.pack("<HHI", 0xFFFE, 0xE000, length)
    with open(a.out, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        buf = io.BytesIO()
        fp = DicomFileLike(buf)
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        write_file_meta_info(fp, meta, enforce_standard=True)
        write_dataset(fp, ds)
        f.write(buf.getvalue())
        # Pixel Data, undefined length: offset table, one item per tile.
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
        offsets, at = [], 0
        for n in range(a.tiles):
            offsets.append(at)
            at += 8 + len(pool[n % len(pool)])
        if at < 2**32:
            f.write(item(4 * a.tiles) + struct.pack(f"<{a.tiles}I", *offsets))
        else:  # too large for a 32-bit table: leave it empty
            f.write(item(0))
        for n in range(a.tiles):
            tile = pool[n % len(pool)]
            f.write(item(len(tile)) + tile)
        f.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        print(f.tell())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
