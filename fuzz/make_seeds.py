"""Write the seed corpora for the fuzz targets into fuzz/corpus/<target>/.
Seeds are small, valid examples of each input, so the fuzzer starts from
the structure real peers send. Run from the repository root; needs pydicom.

usage: python3 fuzz/make_seeds.py
"""
import io
import os
import struct

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    generate_uid,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"


def save(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def item(kind, body):
    return struct.pack(">BBH", kind, 0, len(body)) + body


def uid_item(kind, uid):
    return item(kind, uid.encode())


def associate(kind, called=b"TESSERA", calling=b"MODALITY", contexts=((1, CT),), max_pdu=16384):
    body = struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
    body += uid_item(0x10, "1.2.840.10008.3.1.1.1")
    for cid, abstract in contexts:
        ctx = struct.pack(">BBBB", cid, 0, 0, 0)
        if kind == 0x01:
            ctx += uid_item(0x30, abstract)
        ctx += uid_item(0x40, ImplicitVRLittleEndian)
        body += item(0x20 if kind == 0x01 else 0x21, ctx)
    user = item(0x51, struct.pack(">I", max_pdu)) + uid_item(0x52, "1.2.3.4") + item(0x55, b"SEED")
    body += item(0x50, user)
    return struct.pack(">BBI", kind, 0, len(body)) + body


def command_set(fields):
    ds = Dataset()
    for keyword, value in fields:
        setattr(ds, keyword, value)
    fp = pydicom.filebase.DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    body = fp.getvalue()
    group = struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body))
    return group + body


def p_data(pc_id, control, data):
    pdv = struct.pack(">IBB", len(data) + 2, pc_id, control) + data
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


def commands():
    echo = command_set([
        ("AffectedSOPClassUID", VERIFICATION), ("CommandField", 0x0030),
        ("MessageID", 1), ("CommandDataSetType", 0x0101),
    ])
    store = command_set([
        ("AffectedSOPClassUID", CT), ("CommandField", 0x0001), ("MessageID", 7),
        ("Priority", 0), ("CommandDataSetType", 0x0000),
        ("AffectedSOPInstanceUID", "1.2.3.4.5.6"),
        ("MoveOriginatorApplicationEntityTitle", "MOVER"), ("MoveOriginatorMessageID", 3),
    ])
    find = command_set([
        ("AffectedSOPClassUID", "1.2.840.10008.5.1.4.1.2.2.1"), ("CommandField", 0x0020),
        ("MessageID", 2), ("Priority", 0), ("CommandDataSetType", 0x0000),
    ])
    move = command_set([
        ("AffectedSOPClassUID", "1.2.840.10008.5.1.4.1.2.2.2"), ("CommandField", 0x0021),
        ("MessageID", 4), ("Priority", 0), ("CommandDataSetType", 0x0000),
        ("MoveDestination", "DEST"),
    ])
    rsp = command_set([
        ("AffectedSOPClassUID", CT), ("CommandField", 0x8001), ("MessageIDBeingRespondedTo", 7),
        ("CommandDataSetType", 0x0101), ("Status", 0),
        ("AffectedSOPInstanceUID", "1.2.3.4.5.6"),
    ])
    action = command_set([
        ("RequestedSOPClassUID", "1.2.840.10008.1.20.1"), ("CommandField", 0x0130),
        ("MessageID", 9), ("CommandDataSetType", 0x0000),
        ("RequestedSOPInstanceUID", "1.2.840.10008.1.20.1.1"), ("ActionTypeID", 1),
    ])
    return {"echo": echo, "store": store, "find": find, "move": move, "store-rsp": rsp, "n-action": action}


def part10(ts, rows=4, cols=4, nested=0):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[ts, str(rows), str(nested)])
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.1"
    ds.SeriesInstanceUID = "1.2.3.1.1"
    ds.PatientName = "Nguyễn^Văn"
    ds.PatientID = "P1"
    ds.StudyDate = "20260101"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = "1"
    inner = ds
    for _ in range(nested):
        child = Dataset()
        child.CodeValue = "X"
        inner.ContentSequence = [child]
        inner = child
    ds.PixelData = bytes(rows * cols * 2)
    buf = io.BytesIO()
    uid = pydicom.uid.UID(ts)
    ds.save_as(buf, enforce_file_format=True, implicit_vr=uid.is_implicit_VR,
               little_endian=uid.is_little_endian)
    return buf.getvalue()


def identifier(ts, nested=False):
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "M*ller^H*"
    ds.StudyDate = "20200101-20201231"
    ds.StudyInstanceUID = ""
    ds.ModalitiesInStudy = "CT\\MR"
    if nested:
        item = Dataset()
        item.ScheduledProcedureStepID = "SPS-1"
        ds.RequestAttributesSequence = [item]
    fp = pydicom.filebase.DicomBytesIO()
    uid = pydicom.uid.UID(ts)
    deflated = ts == DeflatedExplicitVRLittleEndian
    fp.is_little_endian = uid.is_little_endian or deflated
    fp.is_implicit_VR = uid.is_implicit_VR and not deflated
    write_dataset(fp, ds)
    data = fp.getvalue()
    if deflated:
        import zlib
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = c.compress(data) + c.flush()
    return data


def main():
    save("pdu", "associate-rq", associate(0x01))
    save("pdu", "associate-rq-2-contexts", associate(0x01, contexts=((1, CT), (3, VERIFICATION))))
    save("pdu", "associate-ac", associate(0x02))
    save("pdu", "associate-rj", struct.pack(">BBIBBBB", 0x03, 0, 4, 0, 1, 1, 7))
    save("pdu", "release-rq", struct.pack(">BBII", 0x05, 0, 4, 0))
    save("pdu", "release-rp", struct.pack(">BBII", 0x06, 0, 4, 0))
    save("pdu", "abort", struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 2, 0))
    for name, cmd in commands().items():
        save("command", name, cmd)
        save("pdu", "p-data-" + name, p_data(1, 0x03, cmd))
    save("pdu", "p-data-dataset", p_data(1, 0x02, b"\x08\x00\x18\x00\x06\x00\x00\x001.2.3\x00"))
    for name, ts in [("implicit", ImplicitVRLittleEndian), ("explicit", ExplicitVRLittleEndian),
                     ("big-endian", ExplicitVRBigEndian), ("deflated", DeflatedExplicitVRLittleEndian)]:
        save("header", name, part10(ts))
    save("header", "nested-sequences", part10(ExplicitVRLittleEndian, nested=3))
    one = part10(ExplicitVRLittleEndian, rows=2, cols=2)
    two = part10(ImplicitVRLittleEndian, rows=2, cols=2)
    head = b"Content-Type: application/dicom\r\n\r\n"
    save("multipart", "one-part", b"--fuzz\r\n" + head + one + b"\r\n--fuzz--\r\n")
    save("multipart", "two-parts-preamble",
         b"preamble\r\n--fuzz\r\n" + head + one + b"\r\n--fuzz\r\n" + head + two + b"\r\n--fuzz--\r\n")
    save("multipart", "headers", b"--fuzz\r\nContent-Type: application/dicom\r\nContent-Location: x\r\n"
         b"Content-Length: 4\r\n\r\nDICM\r\n--fuzz--\r\n")
    save("multipart", "empty", b"--fuzz--\r\n")
    for prefix, name, ts in [(0, "implicit", ImplicitVRLittleEndian), (1, "explicit", ExplicitVRLittleEndian),
                             (2, "big-endian", ExplicitVRBigEndian), (3, "deflated", DeflatedExplicitVRLittleEndian)]:
        save("identifier", name, bytes([prefix]) + identifier(ts))
    # An element inside a sequence item that declares 4 GiB.
    save("identifier", "overlong-in-sequence", bytes([0])
         + b"\x08\x00\x15\x11\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
         + b"\x20\x00\x0e\x00\xf0\xff\xff\xff" + b"1.2.3.4")
    save("identifier", "request-attributes", bytes([0]) + identifier(ImplicitVRLittleEndian, nested=True))
    for name, q in [
        ("patient", "PatientName=Nguy*&PatientID=P1&limit=10&offset=5"),
        ("dates", "StudyDate=20200101-20201231&StudyTime=0800-1200"),
        ("includefield", "includefield=all&includefield=00080060&fuzzymatching=true"),
        ("uids", "StudyInstanceUID=1.2.3,1.2.4&SeriesInstanceUID=1.2.3.1"),
        ("tags", "00100010=A%5EB&0020000D=1.2&ModalitiesInStudy=CT"),
        ("wildcards", "PatientName=%3F%3F*&AccessionNumber=A?1*"),
        ("nested", "ReferencedStudySequence.ReferencedSOPInstanceUID=1.2"),
    ]:
        save("qido", name, q.encode())


if __name__ == "__main__":
    main()
