"""Write original.dcm and variant.dcm into OUTDIR: the same SOP Instance
UID with different content (a changed Series Description and pixels); and
the other variants described below (moved.dcm, misfiled.dcm)."""
import os
import subprocess
import sys

out = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
subprocess.run([sys.executable, os.path.join(here, "gen.py"), out, "--count", "1", "--seed", "3"], check=True)
import pydicom  # noqa: E402

path = os.path.join(out, "img00000.dcm")
ds = pydicom.dcmread(path)
os.rename(path, os.path.join(out, "original.dcm"))
ds.SeriesDescription = "corrected"
ds.PixelData = bytes(len(ds.PixelData))
ds.save_as(os.path.join(out, "variant.dcm"), enforce_file_format=True)

# moved.dcm: the same SOP Instance UID again, now an MR image in a new series,
# for a `replace` that must move the instance and change its class.
moved = pydicom.dcmread(os.path.join(out, "original.dcm"))
moved.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["moved-series"])
moved.Modality = "MR"
moved.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
moved.file_meta.MediaStorageSOPClassUID = moved.SOPClassUID
moved.save_as(os.path.join(out, "moved.dcm"), enforce_file_format=True)

# misfiled.dcm: a new instance of the original's series that names another
# study, as a modality with a broken UID generator sends; and
# misfiled-stow.dcm, another such instance for STOW-RS.
for name in ("misfiled", "misfiled-stow"):
    misfiled = pydicom.dcmread(os.path.join(out, "original.dcm"))
    misfiled.StudyInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["misfiled-study"])
    misfiled.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[name])
    misfiled.file_meta.MediaStorageSOPInstanceUID = misfiled.SOPInstanceUID
    misfiled.save_as(os.path.join(out, f"{name}.dcm"), enforce_file_format=True)
