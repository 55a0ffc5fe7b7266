"""Write original.dcm and variant.dcm into OUTDIR: the same SOP Instance
UID with different content (a changed Series Description and pixels)."""
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
