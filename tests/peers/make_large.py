"""Write a multi-gigabyte whole-slide-like instance without holding it in
memory: the header is built with pydicom, the pixel data streamed in
frames with a deterministic pattern.

usage: make_large.py OUT --frames N [--size 2048]
Prints the file size.
"""
import argparse
import io
import struct

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

VL_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--frames", type=int, required=True)
p.add_argument("--size", type=int, default=2048)
args = p.parse_args()

ds = Dataset()
ds.SOPClassUID = VL_WHOLE_SLIDE
ds.SOPInstanceUID = generate_uid(entropy_srcs=["large", str(args.frames), str(args.size)])
ds.StudyInstanceUID = generate_uid(entropy_srcs=["large-study"])
ds.SeriesInstanceUID = generate_uid(entropy_srcs=["large-series"])
ds.PatientName = "Slide^Large"
ds.PatientID = "WSI-1"
ds.Modality = "SM"
ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
ds.Rows = args.size
ds.Columns = args.size
ds.NumberOfFrames = args.frames
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.BitsAllocated = 8
ds.BitsStored = 8
ds.HighBit = 7
ds.PixelRepresentation = 0
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = ds.SOPClassUID
meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
meta.TransferSyntaxUID = ExplicitVRLittleEndian

frame_len = args.size * args.size
total = frame_len * args.frames
assert total < 2**32 - 2, "pixel data must fit one defined-length element"
with open(args.out, "wb") as f:
    f.write(b"\0" * 128 + b"DICM")
    buf = io.BytesIO()
    from pydicom.filebase import DicomFileLike

    fp = DicomFileLike(buf)
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta, enforce_standard=True)
    write_dataset(fp, ds)
    f.write(buf.getvalue())
    f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, total))
    base = bytes((i * 7) % 251 for i in range(65536))
    for n in range(args.frames):
        f.write((base[n % 251:] + base[: n % 251]) * (frame_len // 65536))
    print(f.tell())
