"""Print "StudyInstanceUID SOPInstanceUID" for every DICOM file under the
given paths (files or directories, walked recursively), one per line.

usage: uids.py PATH...
"""
import os
import sys

import pydicom


def files(paths):
    for path in paths:
        if os.path.isdir(path):
            for root, _, names in os.walk(path):
                for name in sorted(names):
                    yield os.path.join(root, name)
        else:
            yield path


for f in files(sys.argv[1:]):
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    print(ds.StudyInstanceUID, ds.SOPInstanceUID)
