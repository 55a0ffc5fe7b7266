#!/usr/bin/env python3
"""DICOMweb conformance checks (DICOM PS3.18) against a running server.

usage: dicomweb_suite.py --url http://127.0.0.1:PORT/dicom-web
                         [--wado-uri http://127.0.0.1:PORT/wado] [--bearer TOKEN] --check NAME
       dicomweb_suite.py --list
       dicomweb_suite.py --url URL [--wado-uri URL] --all     (every check, then a summary)

One named check per run, so each can be its own Rust test. Exit codes: 0 the
check passed, 1 it failed (the reason is printed, with the last HTTP
exchanges), 2 usage or setup error (server unreachable, unknown check).
With --all: 0 if every check passed, 1 otherwise; the last line is
"N passed, N failed".

Clients: the `dicomweb-client` package (what a real viewer or pipeline would
use) for STOW, QIDO, WADO-RS, metadata, frames and rendered calls, and plain
`requests` for what the client can't express or hides (status codes, headers,
raw multipart parts, error bodies, Range, ETag, gzip, thumbnails, WADO-URI).

Every check stores what it needs through STOW-RS first, with fresh UIDs
(2.25.<uuid>) and a PatientID unique to the run, so checks are independent,
can run in any order or in parallel, and can be re-run on the same server.
Source data are pydicom's test files (pydicom and pydicom-data, see
tests/requirements.txt); decoding JPEG 2000 needs pylibjpeg-openjpeg.

ASSUMPTIONS about the server (what a conformant origin server must do; where
PS3.18 leaves a choice, the choice made here is stated):

* A stored instance is visible to QIDO-RS and WADO-RS as soon as the STOW-RS
  response has been sent.
* Person-name matching (search_fuzzy): `fuzzymatching=true` matches
  PatientName case- and diacritic-insensitively (PS3.18 8.3.4.2 leaves the
  "fuzzy semantic matching" algorithm to the server; this suite expects at
  least case and diacritic folding, so `nguyen*` and `NGUYEN^VAN` find
  `Nguyễn^Văn`). `fuzzymatching=false` (sent explicitly) means literal
  matching: case-sensitive, diacritics significant, so `nguyen*` does NOT
  match `Nguyễn^Văn` while `Nguyễn*` does. PS3.4 C.2.2.2.4 makes literal
  matching case-sensitive except for PN, where it is implementation
  dependent; this suite picks the strict reading, which is Tessera's
  behaviour with fuzzy names off. Tessera's default config turns fuzzy
  person names on for C-FIND; this suite assumes an explicit
  `fuzzymatching=false` on a QIDO request overrides that. When the parameter
  is absent the server may apply its configured default; no check depends
  on that case.
* QIDO list values are comma-separated (PS3.18 8.3.4.1 `uid-list-match =
  attribute "=" 1#value`, 8.3.4.3 `includefield = 1#attribute`);
  dicomweb-client repeats `includefield=` instead, which must work too.
  Query values arrive percent-encoded (dicomweb-client and requests encode
  `^ * , / \\` and UTF-8); the server must decode them.
* Default transfer syntax: `application/dicom` without a transfer-syntax
  parameter means Explicit VR Little Endian (PS3.18 8.7.3.4), so an RLE
  instance comes back decompressed; `transfer-syntax=*` returns the stored
  syntax unchanged (bytes equal to what was sent).
* STOW-RS status codes (PS3.18 10.5.3.1, Table 10.5.3-1): 200 when every
  instance was stored; 202 when some were; 400 when none could be stored
  because the request has bad syntax (here: a body that is not a parsable
  multipart/related message); 409 when the request is well-formed but none
  could be stored because of a conflict (the table's examples: unsupported
  SOP Class, Study Instance UID mismatch; it also allows 409 for a mixture
  of reasons), with the details in the payload; 415 for an unsupported
  Content-Type. An instance that parses but lacks a Type 1 UID
  (StudyInstanceUID or SOPInstanceUID) is an instance-level failure, not a
  syntax error of the request, so this suite expects 409 with a
  FailedSOPSequence item carrying a Failure Reason (Annex I, Table I.2-2:
  A9xx "Data Set does not match SOP Class" or Cxxx "Cannot understand"), not
  400. 415 for a Content-Type other than multipart/related;
  type="application/dicom".
* The STOW-RS response is DICOM JSON with Content-Type exactly
  `application/dicom+json`: dicomweb-client parses the body only when the
  header equals that string (or application/json), a `; charset=...`
  parameter makes it silently return an empty data set.
* dicomweb-client 0.61 sends `Host: 127.0.0.1` WITHOUT the port on its GET
  requests (and on POSTs up to 1 MB); a server that builds absolute URIs
  (RetrieveURL, BulkDataURI) from the Host header then points its clients at
  port 80 (Orthanc does). This suite corrects the client's Host header
  (host:port) so that such URIs are checked as a correct client would see
  them; a server is better off building them from a configured public base
  URL, or from a Host header that includes the port.
* Rendered (PS3.18 8.3.5): `viewport=vw,vh` scales the whole image to fit
  inside vw x vh keeping its aspect ratio; `window=center,width,linear`
  applies to the modality-rescaled values (PS3.4 N.2).
* HTTP: Range on a BulkDataURI gives 206 and exactly the requested bytes of
  the bulk data value (in a single-part multipart/related body or a bare
  body); JSON responses are gzip-compressed when the request says
  `Accept-Encoding: gzip`; metadata responses carry an ETag and answer a
  matching If-None-Match with 304; invalid query parameters give 400 with a
  non-empty human-readable body naming the parameter or value.

WHAT dicomweb-client 0.61.2 SENDS (the server must accept exactly this):

* STOW-RS: POST {root}/studies or {root}/studies/{study}, Accept: */*,
  Content-Type: multipart/related; type="application/dicom";
  boundary="0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1" (boundary quoted). The
  body starts with CRLF before the first delimiter, each part has only a
  Content-Type: application/dicom header, and it ends with the close
  delimiter WITHOUT a trailing CRLF. Bodies over 1 MB are sent with
  Transfer-Encoding: chunked.
* QIDO-RS: GET with Accept: application/dicom+json, application/json;
  values quote_plus-encoded (space as '+', ^ * , \\ and UTF-8 as %XX);
  includefield repeated once per field; fuzzymatching=true|false; limit,
  offset.
* Metadata: Accept: application/dicom+json, application/json.
* retrieve_instance() by default: Accept: multipart/related;
  type="application/dicom"; transfer-syntax=* ; retrieve_study() and
  retrieve_series() by default: multipart/related; type="application/dicom"
  (no transfer-syntax: Explicit VR Little Endian expected).
* Frames: multipart/related; type="application/octet-stream" (decoded), or
  multipart/related; type="image/jpeg"|"image/jp2"|"image/dicom-rle"
  [; transfer-syntax=UID]. The response must be multipart/related (a bare
  application/octet-stream body is rejected by the client).
* Rendered: Accept: image/jpeg or image/png, single-part response.
* Bulk data: multipart/related; type="application/octet-stream", with
  Range: bytes=a-b when a byte range is asked.
This suite's own raw requests (requests library) add: multipart/related;
type="application/dicom"; transfer-syntax=* on instance/RetrieveURL GETs,
Range, If-None-Match, Accept-Encoding: gzip|identity, thumbnails
(Accept: image/jpeg|image/png), WADO-URI GETs, and STOW bodies that start
directly with "--boundary" and end with a CRLF (boundary unquoted).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import struct
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlparse

import numpy as np
import pydicom
import requests
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

try:
    from dicomweb_client.api import DICOMwebClient
except ImportError as e:  # pragma: no cover
    print(f"dicomweb_suite: cannot import dicomweb-client ({e}); pip install -r tests/requirements.txt",
          file=sys.stderr)
    sys.exit(2)
try:
    from PIL import Image
except ImportError as e:  # pragma: no cover
    print(f"dicomweb_suite: cannot import Pillow ({e}); pip install -r tests/requirements.txt", file=sys.stderr)
    sys.exit(2)

RUN = uuid.uuid4().hex[:10].upper()
TIMEOUT = 60

RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"

DEFAULT_FRAME_TS = {"image/jpeg": "1.2.840.10008.1.2.4.70", "image/jp2": J2K_LOSSLESS, "image/dicom-rle": RLE}

ACCEPT_DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_DICOM_DEFAULT = 'multipart/related; type="application/dicom"'
ACCEPT_OCTET = 'multipart/related; type="application/octet-stream"'
ACCEPT_JSON = "application/dicom+json"

# DICOM JSON (PS3.18 F.2.3): these VRs carry JSON numbers.
NUMERIC_VRS = {"DS", "FL", "FD", "IS", "SL", "SS", "UL", "US", "SV", "UV"}
VALID_VRS = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF",
             "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
             "UR", "US", "UT", "UV"}


class CheckFailed(AssertionError):
    pass


class SetupError(Exception):
    pass


def fail(msg: str):
    raise CheckFailed(msg)


def expect(cond, msg: str):
    if not cond:
        raise CheckFailed(msg)


class Soft:
    """Collects independent sub-check failures so one run reports them all."""

    def __init__(self):
        self.errors: list[str] = []

    def run(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except CheckFailed as e:
            self.errors.append(str(e))
            return None

    def expect(self, cond, msg: str):
        if not cond:
            self.errors.append(msg)

    def done(self):
        if len(self.errors) == 1:
            fail(self.errors[0])
        if self.errors:
            fail(f"{len(self.errors)} sub-checks failed:\n  - " + "\n  - ".join(self.errors))


def note(msg: str):
    print(f"note: {msg}", flush=True)


# ------------------------------------------------------------------ context

@dataclass
class Ctx:
    url: str            # DICOMweb root, e.g. http://127.0.0.1:8080/dicom-web
    wado_uri: str | None
    client: DICOMwebClient
    http: requests.Session
    exchanges: list = field(default_factory=list)
    check: str = ""

    def pid(self, tag: str) -> str:
        """A PatientID unique to this run and check (LO, at most 64 chars)."""
        return f"TSR-{RUN}-{self.check}-{tag}"[:64]

    def u(self, path: str) -> str:
        return self.url.rstrip("/") + "/" + path.lstrip("/")

    def get(self, path_or_url: str, **kw) -> requests.Response:
        url = path_or_url if path_or_url.startswith("http") else self.u(path_or_url)
        kw.setdefault("timeout", TIMEOUT)
        return self.http.get(url, **kw)

    def post(self, path_or_url: str, **kw) -> requests.Response:
        url = path_or_url if path_or_url.startswith("http") else self.u(path_or_url)
        kw.setdefault("timeout", TIMEOUT)
        return self.http.post(url, **kw)


def _record(ctx_exchanges):
    def hook(resp, *args, **kwargs):
        req = resp.request
        ctx_exchanges.append(
            f"{req.method} {req.url}\n      Accept: {req.headers.get('Accept', '-')}"
            f"  Content-Type: {req.headers.get('Content-Type', '-')}\n"
            f"   -> {resp.status_code} Content-Type: {resp.headers.get('Content-Type', '-')}"
            f" Content-Length: {resp.headers.get('Content-Length', '-')}")
        del ctx_exchanges[:-12]
        return resp
    return hook


BEARER: str | None = None


def make_ctx(url: str, wado_uri: str | None, check: str) -> Ctx:
    exchanges: list = []
    client_session = requests.Session()
    client_session.hooks["response"].append(_record(exchanges))
    raw = requests.Session()
    raw.hooks["response"].append(_record(exchanges))
    if BEARER:
        for sess in (client_session, raw):
            sess.headers["Authorization"] = f"Bearer {BEARER}"
    client = DICOMwebClient(url=url, session=client_session, timeout=TIMEOUT)
    client.set_http_retry_params(retry=False)
    # dicomweb-client sets the Host header itself, to the host name without
    # the port (web.py: headers['Host'] = self.host). A server that builds
    # absolute URLs (RetrieveURL, BulkDataURI) from Host would then point to
    # port 80. `host` is used for nothing else, so send a correct Host.
    client.host = urlparse(url).netloc
    return Ctx(url=url.rstrip("/"), wado_uri=wado_uri, client=client, http=raw, exchanges=exchanges, check=check)


# --------------------------------------------------------------------- data

def sample(name: str) -> Dataset:
    path = get_testdata_file(name)
    if path is None:
        raise SetupError(f"pydicom test file {name} not found (pip install -r tests/requirements.txt)")
    return pydicom.dcmread(path)


def instance(ctx: Ctx, name: str, *, study: str | None = None, series: str | None = None,
             patient: str = "P", patient_name: str | None = None, **attrs) -> Dataset:
    """A pydicom sample with fresh UIDs and this check's PatientID; pixel data untouched."""
    ds = sample(name)
    ds.StudyInstanceUID = study or pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = series or pydicom.uid.generate_uid()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = ctx.pid(patient)
    ds.PatientName = patient_name if patient_name is not None else f"Tsr{RUN}^{ctx.check.replace('_', '')}"
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def encode(ds: Dataset) -> bytes:
    """The Part 10 bytes dicomweb-client sends for ds (it calls dcmwrite the same way)."""
    b = io.BytesIO()
    pydicom.dcmwrite(b, ds)
    return b.getvalue()


def split_part10(raw: bytes) -> tuple[bytes, bytes]:
    """(preamble + file meta, data set) of a Part 10 file."""
    if len(raw) < 132 or raw[128:132] != b"DICM":
        fail(f"not a DICOM Part 10 file (no DICM prefix); first bytes {raw[:16]!r}")
    pos = 132
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
    while pos + 8 <= len(raw):
        group = struct.unpack_from("<H", raw, pos)[0]
        if group != 2:
            break
        vr = raw[pos + 4:pos + 6]
        if vr in long_vrs:
            pos += 12 + struct.unpack_from("<I", raw, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", raw, pos + 6)[0]
    return raw[:pos], raw[pos:]


def frame_bytes_native(ds: Dataset, index: int) -> bytes:
    """Frame `index` (0-based) of native (uncompressed) pixel data."""
    n = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return bytes(ds.PixelData[index * n:(index + 1) * n])


def encapsulated_frames(ds: Dataset) -> list[bytes]:
    from pydicom.encaps import generate_frames
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    return [bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=nf)]


def decoded_frames(ds: Dataset) -> list[bytes] | None:
    """Little-endian native bytes of each decoded frame, or None if pydicom can't decode."""
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - missing decoder plugin
        note(f"pydicom cannot decode {ds.file_meta.TransferSyntaxUID.name} here ({e}); "
             "skipping the decoded-frame comparison (pip install pylibjpeg pylibjpeg-openjpeg)")
        return None
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    if nf == 1:
        arr = arr[np.newaxis, ...]
    dt = arr.dtype.newbyteorder("<")
    return [arr[i].astype(dt).tobytes() for i in range(nf)]


def same_frame(got: bytes, want: bytes) -> bool:
    """Equal, allowing only the single trailing NUL that pads an odd-length
    encapsulated fragment to even length (PS3.5 A.4) on either side."""
    if got == want:
        return True
    if abs(len(got) - len(want)) == 1:
        a, b = (got, want) if len(got) > len(want) else (want, got)
        return a[-1:] == b"\x00" and a[:-1] == b
    return False


def first_diff(a: bytes, b: bytes) -> str:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return f"first difference at byte {i} (got {a[i]:#04x}, expected {b[i]:#04x}); lengths {len(a)} vs {len(b)}"
    return f"lengths differ: got {len(a)}, expected {len(b)}"


def dataset_diff(got: Dataset, want: Dataset) -> list[str]:
    """Top-level elements (group 0002 excluded) that differ."""
    out = []
    gt = {e.tag for e in got if e.tag.group != 2}
    wt = {e.tag for e in want if e.tag.group != 2}
    for t in sorted(wt - gt):
        out.append(f"missing {t} {want[t].keyword}")
    for t in sorted(gt - wt):
        out.append(f"extra {t} {got[t].keyword}")
    for t in sorted(gt & wt):
        a, b = got[t], want[t]
        if a.VR == "SQ" or b.VR == "SQ":
            if len(a.value) != len(b.value) or any(dataset_diff(x, y) for x, y in zip(a.value, b.value)):
                out.append(f"sequence {t} {b.keyword} differs")
        elif a.value != b.value:
            av, bv = repr(a.value)[:60], repr(b.value)[:60]
            out.append(f"{t} {b.keyword}: {av} != {bv}")
    return out


# -------------------------------------------------------------------- HTTP

def parse_multipart(resp: requests.Response) -> list[tuple[dict, bytes]]:
    """Parts of a multipart/related response as (lower-cased headers, body)."""
    ctype = resp.headers.get("Content-Type", "")
    if not ctype.lower().startswith("multipart/related"):
        fail(f"expected a multipart/related response, got Content-Type {ctype!r} (HTTP {resp.status_code})")
    m = re.search(r'boundary="?([^";]+)"?', ctype, re.I)
    if not m:
        fail(f"multipart/related response without a boundary: {ctype!r}")
    delim = b"\r\n--" + m.group(1).encode()
    body = resp.content
    if body.startswith(delim[2:]):
        body = b"\r\n" + body
    segments = body.split(delim)
    parts = []
    for seg in segments[1:]:
        if seg.startswith(b"--"):
            break
        # transport padding then CRLF
        nl = seg.find(b"\r\n")
        if nl < 0:
            fail("malformed multipart part (no CRLF after the boundary)")
        seg = seg[nl + 2:]
        end = seg.find(b"\r\n\r\n")
        if end < 0:
            if seg.startswith(b"\r\n"):  # no headers at all
                parts.append(({}, seg[2:]))
                continue
            fail("malformed multipart part (no CRLF CRLF after its headers)")
        headers = {}
        for line in seg[:end].decode("latin-1").split("\r\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        parts.append((headers, seg[end + 4:]))
    else:
        fail("multipart response has no closing boundary")
    return parts


def expect_status(resp: requests.Response, *codes: int, what: str = ""):
    if resp.status_code not in codes:
        body = resp.content[:300].decode("utf-8", "replace")
        fail(f"{what or resp.request.method + ' ' + resp.request.url}: expected HTTP "
             f"{' or '.join(map(str, codes))}, got {resp.status_code}; body: {body!r}")


def media_type(resp_or_headers) -> str:
    h = resp_or_headers.headers if hasattr(resp_or_headers, "headers") else resp_or_headers
    return h.get("Content-Type", h.get("content-type", "")).split(";")[0].strip().lower()


def json_body(resp: requests.Response, what: str):
    try:
        return resp.json()
    except ValueError:
        fail(f"{what}: body is not JSON: {resp.content[:200]!r}")


# ----------------------------------------------------------------- DICOM JSON

def value(item: dict, keyword_or_tag: str):
    """First value of an attribute in a DICOM JSON object (PN: Alphabetic), or None."""
    tag = keyword_or_tag if re.fullmatch(r"[0-9A-Fa-f]{8}", keyword_or_tag) else \
        f"{pydicom.datadict.tag_for_keyword(keyword_or_tag):08X}"
    el = item.get(tag.upper())
    if not el or not el.get("Value"):
        return None
    v = el["Value"][0]
    if isinstance(v, dict) and el.get("vr") == "PN":
        return v.get("Alphabetic")
    return v


def values(item: dict, keyword: str) -> list:
    tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
    el = item.get(tag) or {}
    return list(el.get("Value") or [])


def validate_json_dataset(obj, where: str = "") -> None:
    """Structural validation of one DICOM JSON data set (PS3.18 Annex F)."""
    expect(isinstance(obj, dict), f"{where}: DICOM JSON data set must be an object, got {type(obj).__name__}")
    for tag, el in obj.items():
        w = f"{where}{tag}"
        expect(re.fullmatch(r"[0-9A-F]{8}", tag) is not None,
               f"{w}: attribute key must be 8 upper-case hex digits")
        expect(isinstance(el, dict), f"{w}: attribute must be an object")
        vr = el.get("vr")
        expect(vr in VALID_VRS, f"{w}: missing or invalid vr {vr!r}")
        kinds = [k for k in ("Value", "BulkDataURI", "InlineBinary") if k in el]
        expect(len(kinds) <= 1, f"{w}: has more than one of Value/BulkDataURI/InlineBinary: {kinds}")
        if "Value" in el:
            vals = el["Value"]
            expect(isinstance(vals, list), f"{w}: Value must be an array")
            for i, v in enumerate(vals):
                if v is None:
                    continue
                if vr == "SQ":
                    validate_json_dataset(v, f"{w}[{i}].")
                elif vr == "PN":
                    expect(isinstance(v, dict) and set(v) <= {"Alphabetic", "Ideographic", "Phonetic"},
                           f"{w}: PN value must be an object with Alphabetic/Ideographic/Phonetic, got {v!r}")
                elif vr in NUMERIC_VRS:
                    expect(isinstance(v, (int, float)) and not isinstance(v, bool),
                           f"{w}: {vr} value must be a JSON number (PS3.18 F.2.3), got {v!r}")
                elif vr == "AT":
                    expect(isinstance(v, str) and re.fullmatch(r"[0-9A-Fa-f]{8}", v),
                           f"{w}: AT value must be an 8-hex-digit string")
                else:
                    expect(isinstance(v, str), f"{w}: {vr} value must be a string, got {v!r}")
        if "BulkDataURI" in el:
            expect(isinstance(el["BulkDataURI"], str) and el["BulkDataURI"],
                   f"{w}: BulkDataURI must be a non-empty string")
        if "InlineBinary" in el:
            import base64
            try:
                base64.b64decode(el["InlineBinary"], validate=True)
            except Exception:  # noqa: BLE001
                fail(f"{w}: InlineBinary is not valid base64")


def json_to_dataset(obj: dict) -> Dataset:
    return Dataset.from_json(obj, bulk_data_uri_handler=lambda tag, vr, uri: b"")


# ------------------------------------------------------------------ storing

def store(ctx: Ctx, datasets: list[Dataset], study: str | None = None) -> Dataset:
    """STOW-RS through dicomweb-client; fails the check unless every instance is stored."""
    try:
        resp = ctx.client.store_instances(datasets, study_instance_uid=study)
    except requests.HTTPError as e:
        r = e.response
        fail(f"setup STOW-RS failed: HTTP {r.status_code}: {r.content[:300]!r}")
    failed = resp.get("FailedSOPSequence") or []
    if failed:
        reasons = [f"{getattr(i, 'ReferencedSOPInstanceUID', '?')}: {getattr(i, 'FailureReason', '?')}"
                   for i in failed]
        fail(f"setup STOW-RS: {len(failed)} instance(s) failed: {reasons}")
    refs = {str(i.ReferencedSOPInstanceUID) for i in (resp.get("ReferencedSOPSequence") or [])
            if "ReferencedSOPInstanceUID" in i}
    want = {str(d.SOPInstanceUID) for d in datasets}
    if not refs and len(resp) == 0:
        # the client parses only Content-Type exactly application/dicom+json
        note("STOW-RS response gave an empty data set to dicomweb-client "
             "(no body, or a Content-Type other than exactly 'application/dicom+json')")
    expect(want <= refs or len(resp) == 0,
           f"setup STOW-RS: ReferencedSOPSequence lacks {sorted(want - refs)}")
    return resp


def study_uids(results: list[dict]) -> set[str]:
    return {value(r, "StudyInstanceUID") for r in results}


def search_studies(ctx: Ctx, **kw) -> list[dict]:
    try:
        return ctx.client.search_for_studies(**kw)
    except requests.HTTPError as e:
        fail(f"QIDO-RS /studies {kw}: HTTP {e.response.status_code}: {e.response.content[:200]!r}")


def image_from(data: bytes, what: str, fmt: str | None = None) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # noqa: BLE001
        fail(f"{what}: not a decodable image ({e}); first bytes {data[:12]!r}")
    if fmt:
        expect(img.format == fmt, f"{what}: expected a {fmt} image, got {img.format}")
    return img


def gray(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float64)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def modality_values(ds: Dataset, frame: int | None = None) -> np.ndarray:
    arr = ds.pixel_array.astype(np.float64)
    if frame is not None and int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    slope = float(ds.get("RescaleSlope", 1) or 1)
    icpt = float(ds.get("RescaleIntercept", 0) or 0)
    return arr * slope + icpt


def full_range_window(vals: np.ndarray) -> str:
    lo, hi = float(vals.min()), float(vals.max())
    return f"{(lo + hi) / 2:.1f},{hi - lo + 2:.1f},linear"


def instance_path(ds: Dataset) -> str:
    return f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


# ------------------------------------------------------------------- checks

CHECKS: dict[str, tuple[callable, str]] = {}


def check(name: str, doc: str):
    def deco(fn):
        CHECKS[name] = (fn, doc)
        return fn
    return deco


@check("store", "STOW-RS: ReferencedSOPSequence, RetrieveURLs, instances findable; chunked body > 1 MB")
def c_store(ctx: Ctx):
    study = pydicom.uid.generate_uid()
    a = instance(ctx, "CT_small.dcm", study=study)
    b = instance(ctx, "MR_small.dcm", study=study)
    statuses = []
    ctx.client._session.hooks["response"].append(lambda r, *x, **k: statuses.append(
        (r.status_code, r.headers.get("Content-Type", ""))))
    try:
        resp = ctx.client.store_instances([a, b])
    except requests.HTTPError as e:
        fail(f"STOW-RS failed: HTTP {e.response.status_code}: {e.response.content[:300]!r}")
    status, ctype = statuses[-1]
    expect(status == 200, f"STOW-RS of 2 valid instances: expected HTTP 200 (PS3.18 10.5.3.1), got {status}")
    expect(ctype.split(";")[0].strip() == "application/dicom+json",
           f"STOW-RS response Content-Type is {ctype!r}, expected application/dicom+json")
    expect(len(resp) > 0, f"dicomweb-client got an empty STOW-RS response data set; Content-Type was {ctype!r} "
                          "(the client only parses exactly 'application/dicom+json')")
    expect(not resp.get("FailedSOPSequence"), f"FailedSOPSequence present: {resp.get('FailedSOPSequence')}")
    refs = resp.get("ReferencedSOPSequence")
    expect(refs is not None and len(refs) == 2,
           f"ReferencedSOPSequence must list both instances, got {0 if refs is None else len(refs)} item(s)")
    by_uid = {str(i.ReferencedSOPInstanceUID): i for i in refs}
    for ds in (a, b):
        item = by_uid.get(str(ds.SOPInstanceUID))
        expect(item is not None, f"ReferencedSOPSequence lacks {ds.SOPInstanceUID}")
        expect(str(item.ReferencedSOPClassUID) == str(ds.SOPClassUID),
               f"ReferencedSOPClassUID {item.ReferencedSOPClassUID} != {ds.SOPClassUID}")
        expect("RetrieveURL" in item, f"ReferencedSOPSequence item for {ds.SOPInstanceUID} has no RetrieveURL")
        url = str(item.RetrieveURL)
        expect(urlparse(url).path.rstrip("/").endswith(instance_path(ds)),
               f"RetrieveURL {url!r} does not end with {instance_path(ds)}")
        r = ctx.get(urljoin(ctx.url + "/", url), headers={"Accept": ACCEPT_DICOM_ANY})
        expect_status(r, 200, what=f"GET RetrieveURL {url}")
        parts = parse_multipart(r)
        expect(len(parts) == 1, f"GET RetrieveURL {url}: expected 1 part, got {len(parts)}")
        got = pydicom.dcmread(io.BytesIO(parts[0][1]))
        expect(got.SOPInstanceUID == ds.SOPInstanceUID, "RetrieveURL returned another instance")
    if "RetrieveURL" in resp:
        expect(urlparse(str(resp.RetrieveURL)).path.rstrip("/").endswith(f"studies/{study}"),
               f"top-level RetrieveURL {resp.RetrieveURL!r} does not point to the study")
    for ds in (a, b):
        found = ctx.client.search_for_instances(search_filters={"SOPInstanceUID": str(ds.SOPInstanceUID)})
        expect(len(found) == 1, f"instance {ds.SOPInstanceUID} not found by QIDO right after STOW-RS "
                                f"({len(found)} results)")
    # Over 1 MB the client switches to Transfer-Encoding: chunked.
    study2 = pydicom.uid.generate_uid()
    many = [instance(ctx, "CT_small.dcm", study=study2, patient="P2") for _ in range(30)]
    expect(sum(len(encode(d)) for d in many) > 10**6, "test setup: chunked STOW body must exceed 1 MB")
    try:
        resp = ctx.client.store_instances(many)
    except requests.HTTPError as e:
        fail(f"chunked STOW-RS of 30 instances (> 1 MB, Transfer-Encoding: chunked) failed: "
             f"HTTP {e.response.status_code}: {e.response.content[:300]!r}")
    refs = {str(i.ReferencedSOPInstanceUID) for i in resp.get("ReferencedSOPSequence") or []}
    expect(refs == {str(d.SOPInstanceUID) for d in many},
           f"chunked STOW-RS of 30 instances: ReferencedSOPSequence lists {len(refs)} of them")
    found = ctx.client.search_for_instances(search_filters={"PatientID": str(many[0].PatientID)})
    expect(len(found) == 30, f"chunked STOW-RS: QIDO finds {len(found)} of the 30 instances")


@check("stow_partial", "STOW-RS to /studies/{uid} with one matching and one foreign instance: 202, both sequences")
def c_stow_partial(ctx: Ctx):
    study = pydicom.uid.generate_uid()
    good = instance(ctx, "CT_small.dcm", study=study)
    bad = instance(ctx, "MR_small.dcm")  # another study
    body, ctype = multipart_body([encode(good), encode(bad)])
    r = ctx.post(f"studies/{study}", data=body, headers={"Content-Type": ctype, "Accept": ACCEPT_JSON})
    expect_status(r, 202, what="STOW-RS with one matching and one mismatched Study Instance UID "
                               "(PS3.18 10.5.3.1: 202 'stored some of the Instances')")
    obj = json_body(r, "STOW-RS 202 response")
    validate_json_dataset(obj, "STOW response ")
    ds = json_to_dataset(obj)
    refs = [str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", [])]
    failed = [str(i.get("ReferencedSOPInstanceUID", "")) for i in ds.get("FailedSOPSequence", [])]
    expect(refs == [str(good.SOPInstanceUID)], f"ReferencedSOPSequence should hold only the matching instance, got {refs}")
    expect(failed == [str(bad.SOPInstanceUID)], f"FailedSOPSequence should hold only the foreign instance, got {failed}")
    expect("FailureReason" in ds.FailedSOPSequence[0], "FailedSOPSequence item has no FailureReason")
    expect(not ctx.client.search_for_instances(search_filters={"SOPInstanceUID": str(bad.SOPInstanceUID)}),
           "the mismatched instance was stored anyway")


def multipart_body(parts: list[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = "tessera-" + uuid.uuid4().hex
    out = io.BytesIO()
    for p in parts:
        out.write(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        out.write(p)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f'multipart/related; type="{part_type}"; boundary={boundary}'


def expect_failed_sop(r: requests.Response, sop_uid: str | None, what: str):
    expect(media_type(r) in ("application/dicom+json", "application/json"),
           f"{what}: error body should be DICOM JSON (Store Instances Response Module), "
           f"got Content-Type {r.headers.get('Content-Type')!r}")
    obj = json_body(r, what)
    validate_json_dataset(obj, f"{what} response ")
    ds = json_to_dataset(obj)
    failed = ds.get("FailedSOPSequence")
    expect(failed, f"{what}: response has no FailedSOPSequence (0008,1198)")
    expect(not ds.get("ReferencedSOPSequence"), f"{what}: ReferencedSOPSequence lists stored instances")
    item = failed[0]
    expect("FailureReason" in item, f"{what}: FailedSOPSequence item has no FailureReason (0008,1197)")
    if sop_uid:
        expect(str(item.get("ReferencedSOPInstanceUID", "")) == sop_uid,
               f"{what}: FailedSOPSequence ReferencedSOPInstanceUID {item.get('ReferencedSOPInstanceUID')!r} "
               f"!= {sop_uid}")
    return int(item.FailureReason)


@check("stow_conflict_study_uid", "STOW-RS to /studies/{other} -> 409 with FailedSOPSequence, nothing stored")
def c_stow_conflict(ctx: Ctx):
    ds = instance(ctx, "CT_small.dcm")
    other = pydicom.uid.generate_uid()
    body, ctype = multipart_body([encode(ds)])
    r = ctx.post(f"studies/{other}", data=body, headers={"Content-Type": ctype, "Accept": ACCEPT_JSON})
    # PS3.18 10.5.3.1: 409 "... (e.g., unsupported SOP Class or Study Instance UID mismatch)"
    expect_status(r, 409, what="STOW-RS with a Study Instance UID that differs from the URL's")
    expect_failed_sop(r, str(ds.SOPInstanceUID), "STOW-RS study UID mismatch")
    expect(not ctx.client.search_for_instances(search_filters={"SOPInstanceUID": str(ds.SOPInstanceUID)}),
           "the mismatched instance was stored anyway")


@check("stow_missing_uid", "STOW-RS of instances lacking StudyInstanceUID / SOPInstanceUID -> 400 + FailedSOPSequence")
def c_stow_missing(ctx: Ctx):
    # An instance lacking a required attribute cannot be stored as given:
    # Tessera answers 400 when no part of the request could be stored for
    # that reason (the request itself was bad), 409 being kept for conflicts
    # with what is stored or with the URL (PS3.18 10.5.3.1). The failed part
    # is still listed in FailedSOPSequence with a FailureReason.
    soft = Soft()

    def missing_study():
        ds = instance(ctx, "CT_small.dcm")
        del ds.StudyInstanceUID
        body, ctype = multipart_body([encode(ds)])
        r = ctx.post("studies", data=body, headers={"Content-Type": ctype, "Accept": ACCEPT_JSON})
        expect_status(r, 400, what="STOW-RS of an instance without StudyInstanceUID")
        expect_failed_sop(r, None, "STOW-RS without StudyInstanceUID")
        expect(not ctx.client.search_for_instances(search_filters={"SOPInstanceUID": str(ds.SOPInstanceUID)}),
               "the instance without StudyInstanceUID was stored anyway")

    def missing_sop():
        ds = instance(ctx, "CT_small.dcm")
        del ds.SOPInstanceUID
        body, ctype = multipart_body([encode(ds)])
        r = ctx.post("studies", data=body, headers={"Content-Type": ctype, "Accept": ACCEPT_JSON})
        expect_status(r, 400, what="STOW-RS of an instance without SOPInstanceUID")
        expect_failed_sop(r, None, "STOW-RS without SOPInstanceUID")
        expect(not ctx.client.search_for_studies(search_filters={"StudyInstanceUID": str(ds.StudyInstanceUID)}),
               "the instance without SOPInstanceUID was stored anyway (its study is searchable)")

    soft.run(missing_study)
    soft.run(missing_sop)
    soft.done()


@check("stow_bad_syntax", "STOW-RS with a body that is not a multipart message -> 400")
def c_stow_bad_syntax(ctx: Ctx):
    soft = Soft()
    boundary = "tessera-" + uuid.uuid4().hex
    r = ctx.post("studies", data=b"this is not a multipart body\r\n" * 4,
                 headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                          "Accept": ACCEPT_JSON})
    soft.run(expect_status, r, 400,
             what="STOW-RS whose body has no multipart boundary (PS3.18 10.5.3.1: 400 bad syntax)")
    r = ctx.post("studies", data=b"--x\r\n\r\n--x--\r\n",
                 headers={"Content-Type": 'multipart/related; type="application/dicom"', "Accept": ACCEPT_JSON})
    # A multipart/related Content-Type without its boundary is unusable: 400
    # (bad syntax) or 415 (unsupported media type) are both fair.
    soft.run(expect_status, r, 400, 415, what="STOW-RS with multipart/related but no boundary parameter")
    soft.done()


@check("stow_broken_body", "STOW-RS whose body breaks after a stored part -> 202 listing the stored part")
def c_stow_broken_body(ctx: Ctx):
    first = instance(ctx, "CT_small.dcm")
    second = instance(ctx, "CT_small.dcm")
    body, ctype = multipart_body([encode(first), encode(second)])
    # Cut in the middle of the second part: no closing boundary ever comes.
    cut = body.rindex(encode(second)[:200]) + len(encode(second)) // 2
    r = ctx.post("studies", data=body[:cut], headers={"Content-Type": ctype, "Accept": ACCEPT_JSON})
    expect_status(r, 202, what="STOW-RS whose body breaks inside the second part")
    ds = json_to_dataset(json_body(r, "broken STOW-RS"))
    stored = [str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", [])]
    expect(stored == [str(first.SOPInstanceUID)], f"ReferencedSOPSequence lists {stored}")
    expect(ds.get("FailedSOPSequence"), "the broken part is not listed in FailedSOPSequence")
    expect(ctx.client.search_for_instances(search_filters={"SOPInstanceUID": str(first.SOPInstanceUID)}),
           "the part reported as stored cannot be found")


@check("stow_unsupported_media_type", "STOW-RS with Content-Type text/plain -> 415")
def c_stow_415(ctx: Ctx):
    soft = Soft()
    ds = instance(ctx, "CT_small.dcm")
    r = ctx.post("studies", data=b"hello", headers={"Content-Type": "text/plain", "Accept": ACCEPT_JSON})
    soft.run(expect_status, r, 415, what="STOW-RS with Content-Type text/plain (PS3.18 10.5.3.1)")
    r = ctx.post("studies", data=encode(ds), headers={"Content-Type": "application/pdf", "Accept": ACCEPT_JSON})
    soft.run(expect_status, r, 415, what="STOW-RS with Content-Type application/pdf")
    body, ctype = multipart_body([encode(ds)])
    r = ctx.post("studies", data=gzip.compress(body),
                 headers={"Content-Type": ctype, "Content-Encoding": "gzip", "Accept": ACCEPT_JSON})
    # A server may inflate the body (bounded) or refuse the coding; Tessera refuses.
    soft.run(expect_status, r, 415, what="STOW-RS with Content-Encoding: gzip")
    soft.done()


@check("stow_quoted_boundary", "STOW-RS whose boundary parameter is quoted and holds ';' and '=' -> 200")
def c_stow_quoted_boundary(ctx: Ctx):
    ds = instance(ctx, "CT_small.dcm")
    body, _ = multipart_body([encode(ds)])
    plain = body[2:body.index(b"\r\n")].decode()
    quoted = 'b;x=1 ' + plain
    body = body.replace(plain.encode(), quoted.encode())
    ctype = f'multipart/related; type="application/dicom"; boundary="{quoted}"'
    r = ctx.post("studies", data=body, headers={"Content-Type": ctype, "Accept": ACCEPT_JSON})
    expect_status(r, 200, what="STOW-RS with a quoted boundary")
    expect(ctx.client.search_for_instances(search_filters={"SOPInstanceUID": str(ds.SOPInstanceUID)}),
           "the instance sent with a quoted boundary cannot be found")


def two_studies(ctx: Ctx):
    """Patient P: study A (1 CT), study B (CT series of 1 + MR series of 2)."""
    sa, sb = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    name = f"Tsr{RUN}^Alpha"
    a = instance(ctx, "CT_small.dcm", study=sa, patient_name=name, StudyDate="20200115",
                 StudyDescription="TSR study A", AccessionNumber=f"A{RUN}")
    ser_ct, ser_mr = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    b1 = instance(ctx, "CT_small.dcm", study=sb, series=ser_ct, patient_name=name, StudyDate="20210610",
                  StudyDescription="TSR study B", AccessionNumber=f"B{RUN}", InstanceNumber=1)
    b2 = instance(ctx, "MR_small.dcm", study=sb, series=ser_mr, patient_name=name, StudyDate="20210610",
                  StudyDescription="TSR study B", AccessionNumber=f"B{RUN}", InstanceNumber=1)
    b3 = instance(ctx, "MR_small.dcm", study=sb, series=ser_mr, patient_name=name, StudyDate="20210610",
                  StudyDescription="TSR study B", AccessionNumber=f"B{RUN}", InstanceNumber=2)
    store(ctx, [a, b1, b2, b3])
    return a, (b1, b2, b3)


@check("search_studies", "QIDO-RS studies: PatientID, PatientName wildcard, StudyDate ranges, ModalitiesInStudy, counts")
def c_search_studies(ctx: Ctx):
    a, (b1, b2, b3) = two_studies(ctx)
    A, B = str(a.StudyInstanceUID), str(b1.StudyInstanceUID)
    pid = str(a.PatientID)

    soft = Soft()

    def q(filters, want, label):
        def one():
            got = study_uids(search_studies(ctx, search_filters=filters))
            expect(got == want, f"{label}: {filters} -> {len(got)} studies, expected {len(want)} "
                                f"(missing {len(want - got)}, unexpected {len(got - want)})")
        soft.run(one)

    r = ctx.get("studies", params={"PatientID": pid}, headers={"Accept": ACCEPT_JSON})
    expect_status(r, 200)
    expect(media_type(r) == "application/dicom+json", f"QIDO-RS Content-Type {r.headers.get('Content-Type')!r}, "
                                                      "expected application/dicom+json")
    q({"PatientID": pid}, {A, B}, "PatientID")
    q({"PatientID": pid, "StudyDate": "20200101-20200131"}, {A}, "StudyDate closed range")
    q({"PatientID": pid, "StudyDate": "20210101-"}, {B}, "StudyDate open end")
    q({"PatientID": pid, "StudyDate": "-20201231"}, {A}, "StudyDate open start")
    q({"PatientID": pid, "StudyDate": "20210610"}, {B}, "StudyDate single value")
    q({"PatientName": f"Tsr{RUN}^Al*"}, {A, B}, "PatientName wildcard *")
    q({"PatientName": f"Tsr{RUN}^Alph?"}, {A, B}, "PatientName wildcard ?")
    q({"PatientName": f"Xyz{RUN}*"}, set(), "PatientName wildcard, no match")
    q({"PatientID": pid, "ModalitiesInStudy": "MR"}, {B}, "ModalitiesInStudy=MR")
    q({"PatientID": pid, "ModalitiesInStudy": "CT"}, {A, B}, "ModalitiesInStudy=CT")
    q({"StudyInstanceUID": A}, {A}, "StudyInstanceUID")
    q({"AccessionNumber": f"B{RUN}"}, {B}, "AccessionNumber")
    # PS3.18 8.3.4.1: uid-list-match = attribute "=" 1#value, i.e. comma-separated
    q({"PatientID": pid, "StudyInstanceUID": f"{A},{B}"}, {A, B}, "StudyInstanceUID list (comma-separated)")

    res = {value(r, "StudyInstanceUID"): r for r in search_studies(ctx, search_filters={"PatientID": pid})}
    for r in res.values():
        validate_json_dataset(r, "QIDO study result ")
    expect(A in res and B in res, f"PatientID={pid}: expected studies A and B in the results, got {len(res)}")
    ra, rb = res[A], res[B]
    for label, r, series, inst, mods, date in (("A", ra, 1, 1, {"CT"}, "20200115"),
                                               ("B", rb, 2, 3, {"CT", "MR"}, "20210610")):
        n_se = value(r, "NumberOfStudyRelatedSeries")
        n_in = value(r, "NumberOfStudyRelatedInstances")
        soft.expect(n_se is not None and int(n_se) == series,
                    f"study {label}: NumberOfStudyRelatedSeries {n_se!r}, expected {series}")
        soft.expect(n_in is not None and int(n_in) == inst,
                    f"study {label}: NumberOfStudyRelatedInstances {n_in!r}, expected {inst}")
        got_mods = set(values(r, "ModalitiesInStudy"))
        soft.expect(got_mods == mods, f"study {label}: ModalitiesInStudy {sorted(got_mods)}, expected {sorted(mods)}")
        soft.expect(value(r, "StudyDate") == date, f"study {label}: StudyDate {value(r, 'StudyDate')!r} != {date}")
        soft.expect(value(r, "PatientName") == f"Tsr{RUN}^Alpha",
                    f"study {label}: PatientName {value(r, 'PatientName')!r}")
        soft.expect(value(r, "PatientID") == pid, f"study {label}: PatientID {value(r, 'PatientID')!r}")
        ru = value(r, "RetrieveURL")
        soft.expect(ru and urlparse(ru).path.rstrip("/").endswith(f"studies/{value(r, 'StudyInstanceUID')}"),
                    f"study {label}: RetrieveURL {ru!r} missing or not the study's URL")
    soft.done()


@check("search_series", "QIDO-RS series: study-scoped and all-series, Modality, NumberOfSeriesRelatedInstances")
def c_search_series(ctx: Ctx):
    a, (b1, b2, b3) = two_studies(ctx)
    B = str(b1.StudyInstanceUID)
    ser = ctx.client.search_for_series(study_instance_uid=B)
    expect({value(r, "SeriesInstanceUID") for r in ser} == {str(b1.SeriesInstanceUID), str(b2.SeriesInstanceUID)},
           f"/studies/B/series: expected the 2 series of study B, got {len(ser)}")
    for r in ser:
        validate_json_dataset(r, "QIDO series result ")
    mr = ctx.client.search_for_series(study_instance_uid=B, search_filters={"Modality": "MR"})
    expect(len(mr) == 1 and value(mr[0], "SeriesInstanceUID") == str(b2.SeriesInstanceUID),
           f"/studies/B/series?Modality=MR: expected the MR series, got {len(mr)} result(s)")
    n = value(mr[0], "NumberOfSeriesRelatedInstances")
    expect(n is not None and int(n) == 2, f"MR series NumberOfSeriesRelatedInstances {n!r}, expected 2")
    expect(value(mr[0], "Modality") == "MR", f"Modality {value(mr[0], 'Modality')!r}")
    ct = ctx.client.search_for_series(search_filters={"StudyInstanceUID": B, "Modality": "CT"})
    expect(len(ct) == 1 and value(ct[0], "SeriesInstanceUID") == str(b1.SeriesInstanceUID),
           f"/series?StudyInstanceUID=B&Modality=CT: expected 1 series, got {len(ct)}")
    one = ctx.client.search_for_series(search_filters={"SeriesInstanceUID": str(a.SeriesInstanceUID)})
    expect(len(one) == 1, f"/series?SeriesInstanceUID=...: expected 1 result, got {len(one)}")
    n = value(one[0], "NumberOfSeriesRelatedInstances")
    expect(n is not None and int(n) == 1, f"NumberOfSeriesRelatedInstances {n!r}, expected 1")
    allp = ctx.client.search_for_series(search_filters={"PatientID": str(a.PatientID)})
    expect(len(allp) == 3, f"/series?PatientID=P: expected 3 series, got {len(allp)}")


@check("search_instances", "QIDO-RS instances: series/study-scoped, SOPInstanceUID, Modality, default attributes")
def c_search_instances(ctx: Ctx):
    a, (b1, b2, b3) = two_studies(ctx)
    B = str(b1.StudyInstanceUID)
    got = ctx.client.search_for_instances(study_instance_uid=B, series_instance_uid=str(b2.SeriesInstanceUID))
    expect({value(r, "SOPInstanceUID") for r in got} == {str(b2.SOPInstanceUID), str(b3.SOPInstanceUID)},
           f"/studies/B/series/MR/instances: expected the 2 MR instances, got {len(got)}")
    got = ctx.client.search_for_instances(study_instance_uid=B)
    expect(len(got) == 3, f"/studies/B/instances: expected 3 instances, got {len(got)}")
    # The path fixes the study, not the series: each result names its
    # series (PS3.18 10.6.3.3), and not the study's attributes.
    expect({value(r, "SeriesInstanceUID") for r in got} == {str(b1.SeriesInstanceUID), str(b2.SeriesInstanceUID)},
           "/studies/B/instances: results lack their SeriesInstanceUID")
    expect(all(value(r, "PatientName") is None for r in got),
           "/studies/B/instances: study attributes in the results")
    got = ctx.client.search_for_instances(study_instance_uid=B, search_filters={"Modality": "MR"})
    expect(len(got) == 2, f"/studies/B/instances?Modality=MR: expected 2, got {len(got)}")
    got = ctx.client.search_for_instances(search_filters={"SOPInstanceUID": str(b3.SOPInstanceUID)})
    expect(len(got) == 1, f"/instances?SOPInstanceUID=X: expected 1 result, got {len(got)}")
    r = got[0]
    validate_json_dataset(r, "QIDO instance result ")
    expect(value(r, "SOPInstanceUID") == str(b3.SOPInstanceUID), "wrong SOPInstanceUID")
    expect(value(r, "SOPClassUID") == str(b3.SOPClassUID), f"SOPClassUID {value(r, 'SOPClassUID')!r}")
    # PS3.18 Table 10.6.3-5: default instance-level attributes
    expect(value(r, "InstanceNumber") is not None and int(value(r, "InstanceNumber")) == 2,
           f"InstanceNumber {value(r, 'InstanceNumber')!r}, expected 2")
    expect(value(r, "Rows") == 64 and value(r, "Columns") == 64,
           f"Rows/Columns {value(r, 'Rows')!r}/{value(r, 'Columns')!r}, expected 64/64")
    ru = value(r, "RetrieveURL")
    expect(ru and urlparse(ru).path.rstrip("/").endswith(instance_path(b3)),
           f"instance RetrieveURL {ru!r} missing or wrong")
    none = ctx.client.search_for_instances(search_filters={"SOPInstanceUID": pydicom.uid.generate_uid()})
    expect(none == [], f"unknown SOPInstanceUID matched {len(none)} instance(s)")


@check("search_includefield", "QIDO-RS includefield by keyword, by tag and 'all'")
def c_search_includefield(ctx: Ctx):
    a, _ = two_studies(ctx)
    A = str(a.StudyInstanceUID)
    soft = Soft()

    def study_level(fields, label):
        res = search_studies(ctx, search_filters={"StudyInstanceUID": A}, fields=fields)
        expect(len(res) == 1, f"includefield={fields[0]}: expected 1 study, got {len(res)}")
        got = value(res[0], "StudyDescription")
        expect(got == "TSR study A",
               f"includefield={fields[0]} ({label}): StudyDescription (0008,1030) is {got!r}, expected 'TSR study A'")

    for fields, label in ((["StudyDescription"], "keyword"), (["00081030"], "tag"), (["all"], "all")):
        soft.run(study_level, fields, label)

    def comma_list():
        # PS3.18 8.3.4.3: includefield = 1#attribute, a comma-separated list
        r = ctx.get("studies", params=query({"StudyInstanceUID": A, "includefield": "StudyDescription,00100010"}),
                    headers={"Accept": ACCEPT_JSON})
        expect_status(r, 200)
        res = json_body(r, "QIDO includefield list")
        expect(len(res) == 1 and value(res[0], "StudyDescription") == "TSR study A",
               "includefield=StudyDescription,00100010 (comma list): StudyDescription not returned")

    soft.run(comma_list)

    def series_level():
        res = ctx.client.search_for_series(study_instance_uid=A, fields=["SeriesDate", "00200011"])
        expect(len(res) == 1, f"series includefield: expected 1 series, got {len(res)}")
        sn = value(res[0], "SeriesNumber")
        expect(sn is not None and int(sn) == int(a.SeriesNumber),
               f"series includefield=00200011: SeriesNumber {sn!r}, expected {a.SeriesNumber}")
        expect(value(res[0], "SeriesDate") == a.SeriesDate,
               f"series includefield=SeriesDate: {value(res[0], 'SeriesDate')!r}, expected {a.SeriesDate}")

    def instance_level():
        res = ctx.client.search_for_instances(study_instance_uid=A, fields=["all"])
        expect(len(res) == 1, f"instances includefield=all: expected 1, got {len(res)}")
        expect(value(res[0], "SOPInstanceUID") == str(a.SOPInstanceUID), "instance includefield=all: SOPInstanceUID")
        expect(value(res[0], "StudyDescription") == "TSR study A",
               f"instance includefield=all: StudyDescription {value(res[0], 'StudyDescription')!r}")

    soft.run(series_level)
    soft.run(instance_level)
    soft.done()


@check("search_paging", "QIDO-RS limit/offset: disjoint pages covering all matches")
def c_search_paging(ctx: Ctx):
    sets = [instance(ctx, "CT_small.dcm", StudyDate=f"2019010{i + 1}") for i in range(5)]
    store(ctx, sets)
    want = {str(d.StudyInstanceUID) for d in sets}
    pid = str(sets[0].PatientID)
    expect(study_uids(search_studies(ctx, search_filters={"PatientID": pid})) == want,
           "without limit not all 5 studies are returned")
    pages = []
    for off in (0, 2, 4):
        page = search_studies(ctx, search_filters={"PatientID": pid}, limit=2, offset=off)
        expect(len(page) == min(2, 5 - off), f"limit=2&offset={off}: got {len(page)} results, "
                                             f"expected {min(2, 5 - off)}")
        pages.append(study_uids(page))
    expect(not (pages[0] & pages[1] or pages[1] & pages[2] or pages[0] & pages[2]),
           f"pages overlap: {pages}")
    expect(pages[0] | pages[1] | pages[2] == want, "pages do not cover all 5 studies")
    beyond = search_studies(ctx, search_filters={"PatientID": pid}, offset=5)
    expect(beyond == [], f"offset=5 of 5: expected no results, got {len(beyond)}")
    one = search_studies(ctx, search_filters={"PatientID": pid}, limit=1)
    expect(len(one) == 1, f"limit=1: got {len(one)} results")


@check("search_sequence", "QIDO-RS series by RequestAttributesSequence item attributes; the item is returned")
def c_search_sequence(ctx: Ctx):
    soft = Soft()
    study = pydicom.uid.generate_uid()
    request = Dataset()
    request.ScheduledProcedureStepID = f"SPS-{RUN}"
    request.RequestedProcedureID = "RP-7"
    ds = instance(ctx, "CT_small.dcm", study=study, RequestAttributesSequence=[request])
    store(ctx, [ds])

    def search(params):
        r = ctx.get(f"studies/{study}/series", params=params, headers={"Accept": ACCEPT_JSON})
        expect_status(r, 200, what=f"series search {params}")
        return json_body(r, f"series search {params}")

    def by_tag_path():
        found = search({"00400275.00400009": f"SPS-{RUN}"})
        expect(len(found) == 1, f"00400275.00400009=SPS-{RUN}: {len(found)} series, expected 1")
        seq = found[0].get("00400275", {})
        expect(seq.get("vr") == "SQ" and len(seq.get("Value", [])) == 1,
               f"RequestAttributesSequence not returned as one item: {seq!r}")
        item = seq["Value"][0]
        expect(value(item, "00400009") == f"SPS-{RUN}" and value(item, "00401001") == "RP-7",
               f"returned item has the wrong values: {item!r}")

    def by_keyword_and_wildcard():
        found = search({"RequestAttributesSequence.ScheduledProcedureStepID": "SPS-*"})
        expect(len(found) == 1, f"keyword path with wildcard: {len(found)} series, expected 1")

    def no_match():
        found = search({"00400275.00400009": "SPS-nothing"})
        expect(found == [], f"a different ScheduledProcedureStepID matched: {found!r}")

    soft.run(by_tag_path)
    soft.run(by_keyword_and_wildcard)
    soft.run(no_match)
    soft.done()


@check("search_fuzzy", "QIDO-RS fuzzymatching=true folds case and diacritics; false is literal (see docstring)")
def c_search_fuzzy(ctx: Ctx):
    name = "Nguyễn^Văn"
    ds = instance(ctx, "CT_small.dcm", patient_name=name, SpecificCharacterSet="ISO_IR 192")
    store(ctx, [ds])
    pid, S = str(ds.PatientID), str(ds.StudyInstanceUID)

    def found(pn, fuzzy):
        res = search_studies(ctx, search_filters={"PatientID": pid, "PatientName": pn}, fuzzymatching=fuzzy)
        return S in study_uids(res), res

    soft = Soft()
    hit, res = found("Nguyễn^Văn", False)
    soft.expect(hit, "fuzzymatching=false, PatientName=Nguyễn^Văn (exact, UTF-8): not found")
    if hit:
        got = value(res[0], "PatientName")
        soft.expect(got == name, f"PatientName came back as {got!r}, expected {name!r} (UTF-8 round trip)")
    soft.expect(found("Nguyễn*", False)[0], "fuzzymatching=false, PatientName=Nguyễn*: not found")
    soft.expect(not found("nguyen*", False)[0],
                "fuzzymatching=false, PatientName=nguyen* matched Nguyễn^Văn; literal matching is case- and "
                "diacritic-sensitive (PS3.4 C.2.2.2.4)")
    soft.expect(not found("NGUYỄN^VĂN", False)[0],
                "fuzzymatching=false, PatientName=NGUYỄN^VĂN matched Nguyễn^Văn (case-sensitive expected)")
    soft.expect(found("nguyen*", True)[0], "fuzzymatching=true, PatientName=nguyen*: Nguyễn^Văn not found")
    soft.expect(found("NGUYEN^VAN", True)[0], "fuzzymatching=true, PatientName=NGUYEN^VAN: Nguyễn^Văn not found")
    soft.expect(found("nguyễn^văn", True)[0], "fuzzymatching=true, PatientName=nguyễn^văn: Nguyễn^Văn not found")
    soft.expect(not found("nguyet*", True)[0], "fuzzymatching=true, PatientName=nguyet*: matched Nguyễn^Văn")
    soft.done()


def retrieve_fixture(ctx: Ctx):
    study = pydicom.uid.generate_uid()
    ser1 = pydicom.uid.generate_uid()
    ct = instance(ctx, "CT_small.dcm", study=study, series=ser1)
    ct2 = instance(ctx, "CT_small.dcm", study=study, series=ser1, InstanceNumber=2)
    rle = instance(ctx, "MR_small_RLE.dcm", study=study)
    jpg = instance(ctx, "SC_rgb_jpeg_dcmtk.dcm", study=study)
    store(ctx, [ct, ct2, rle, jpg])
    return ct, ct2, rle, jpg


def same_instance(got: Dataset, want: Dataset, what: str, *, ts: str | None = None):
    expect(str(got.SOPInstanceUID) == str(want.SOPInstanceUID),
           f"{what}: SOPInstanceUID {got.SOPInstanceUID} != {want.SOPInstanceUID}")
    want_ts = ts or str(want.file_meta.TransferSyntaxUID)
    got_ts = str(got.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in got.file_meta else "?"
    expect(got_ts == want_ts, f"{what}: transfer syntax {got_ts}, expected {want_ts}")
    if ts is None or ts == str(want.file_meta.TransferSyntaxUID):
        expect(bytes(got.PixelData) == bytes(want.PixelData),
               f"{what}: PixelData differs: {first_diff(bytes(got.PixelData), bytes(want.PixelData))}")
        diff = dataset_diff(got, want)
        expect(not diff, f"{what}: data set differs from the stored one: {diff[:6]}")


@check("retrieve_instance", "WADO-RS instance with transfer-syntax=*: data set equal to the stored one, bytes too")
def c_retrieve_instance(ctx: Ctx):
    for ds in retrieve_fixture(ctx):
        got = ctx.client.retrieve_instance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                           str(ds.SOPInstanceUID))  # Accept ...; transfer-syntax=*
        same_instance(got, ds, f"retrieve_instance {ds.file_meta.TransferSyntaxUID.name}")
        r = ctx.get(instance_path(ds), headers={"Accept": ACCEPT_DICOM_ANY})
        expect_status(r, 200)
        parts = parse_multipart(r)
        expect(len(parts) == 1, f"instance retrieve: expected 1 part, got {len(parts)}")
        hdrs, body = parts[0]
        expect(hdrs.get("content-type", "").split(";")[0].strip() == "application/dicom",
               f"part Content-Type {hdrs.get('content-type')!r}, expected application/dicom")
        _, got_body = split_part10(body)
        _, want_body = split_part10(encode(ds))
        expect(got_body == want_body,
               f"{ds.file_meta.TransferSyntaxUID.name}: data set bytes differ from the bytes sent: "
               f"{first_diff(got_body, want_body)}")


@check("retrieve_default_ts", "WADO-RS instance without transfer-syntax: Explicit VR LE, RLE decompressed (8.7.3.4)")
def c_retrieve_default(ctx: Ctx):
    ct, _, rle, _ = retrieve_fixture(ctx)
    got = ctx.client.retrieve_instance(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID), str(ct.SOPInstanceUID),
                                       media_types=("application/dicom",))
    same_instance(got, ct, "default-TS retrieve of Explicit VR LE CT")
    got = ctx.client.retrieve_instance(str(rle.StudyInstanceUID), str(rle.SeriesInstanceUID),
                                       str(rle.SOPInstanceUID), media_types=("application/dicom",))
    same_instance(got, rle, "default-TS retrieve of RLE MR", ts=ExplicitVRLittleEndian)
    expect(np.array_equal(got.pixel_array, rle.pixel_array),
           "default-TS retrieve of RLE MR: decompressed pixels differ from the source's")


@check("retrieve_series", "WADO-RS series: default (Explicit VR LE) and transfer-syntax=*")
def c_retrieve_series(ctx: Ctx):
    ct, ct2, _, _ = retrieve_fixture(ctx)
    for media in (None, (("application/dicom", "*"),)):
        got = list(ctx.client.retrieve_series(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID),
                                              media_types=media))
        expect(len(got) == 2, f"series retrieve (media {media}): expected 2 instances, got {len(got)}")
        by = {str(d.SOPInstanceUID): d for d in got}
        for want in (ct, ct2):
            expect(str(want.SOPInstanceUID) in by, f"series retrieve lacks {want.SOPInstanceUID}")
            same_instance(by[str(want.SOPInstanceUID)], want, f"series retrieve (media {media})")


@check("retrieve_study", "WADO-RS study: all instances; default TS decompresses RLE; * keeps stored syntaxes")
def c_retrieve_study(ctx: Ctx):
    srcs = retrieve_fixture(ctx)
    ct, ct2, rle, jpg = srcs
    got = {str(d.SOPInstanceUID): d for d in ctx.client.retrieve_study(str(ct.StudyInstanceUID),
                                                                      media_types=(("application/dicom", "*"),))}
    expect(set(got) == {str(d.SOPInstanceUID) for d in srcs},
           f"study retrieve (transfer-syntax=*): expected 4 instances, got {len(got)}")
    for d in srcs:
        same_instance(got[str(d.SOPInstanceUID)], d, f"study retrieve * ({d.file_meta.TransferSyntaxUID.name})")
    got = {str(d.SOPInstanceUID): d for d in ctx.client.retrieve_study(str(ct.StudyInstanceUID))}
    expect(len(got) == 4, f"study retrieve (default): expected 4 instances, got {len(got)}")
    same_instance(got[str(ct.SOPInstanceUID)], ct, "study retrieve default (CT)")
    same_instance(got[str(rle.SOPInstanceUID)], rle, "study retrieve default (RLE)", ts=ExplicitVRLittleEndian)
    expect(np.array_equal(got[str(rle.SOPInstanceUID)].pixel_array, rle.pixel_array),
           "study retrieve default: RLE instance decompressed to other pixels")
    j = got[str(jpg.SOPInstanceUID)]
    jts = str(j.file_meta.TransferSyntaxUID)
    # 8.7.3.4 Note 2: lossy pixel data may come back in its lossy syntax
    expect(jts in (ExplicitVRLittleEndian, JPEG_BASELINE),
           f"study retrieve default: JPEG Baseline instance came back as {jts}")


def metadata_fixture(ctx: Ctx):
    study = pydicom.uid.generate_uid()
    ser = pydicom.uid.generate_uid()
    ct = instance(ctx, "CT_small.dcm", study=study)
    mr1 = instance(ctx, "MR_small.dcm", study=study, series=ser, InstanceNumber=1)
    mr2 = instance(ctx, "MR_small.dcm", study=study, series=ser, InstanceNumber=2)
    store(ctx, [ct, mr1, mr2])
    return ct, mr1, mr2


REQUIRED_META = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
                 "Modality", "Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation"]
COMPARE_META = REQUIRED_META + ["PatientName", "StudyDate", "PixelRepresentation", "BitsStored", "InstanceNumber",
                                "ImagePositionPatient", "PixelSpacing"]


def check_metadata_item(item: dict, want: Dataset, what: str):
    validate_json_dataset(item, f"{what} ")
    for kw in REQUIRED_META:
        tag = f"{pydicom.datadict.tag_for_keyword(kw):08X}"
        expect(tag in item, f"{what}: required attribute {kw} ({tag}) missing")
    px = item.get("7FE00010")
    expect(px is not None, f"{what}: PixelData (7FE00010) missing from metadata")
    expect("BulkDataURI" in px, f"{what}: PixelData must be given as a BulkDataURI in metadata "
                                f"(PS3.18 10.4.3.3.2), got keys {sorted(px)}")
    got = json_to_dataset(item)
    for kw in COMPARE_META:
        if kw in want:
            expect(kw in got, f"{what}: {kw} missing")
            a, b = got.data_element(kw).value, want.data_element(kw).value
            expect(str(a) == str(b) if kw == "PatientName" else a == b, f"{what}: {kw} is {a!r}, expected {b!r}")


@check("metadata_instance", "WADO-RS instance metadata: DICOM JSON, required attributes, PixelData BulkDataURI")
def c_metadata_instance(ctx: Ctx):
    ct, _, _ = metadata_fixture(ctx)
    r = ctx.get(instance_path(ct) + "/metadata", headers={"Accept": ACCEPT_JSON})
    expect_status(r, 200)
    expect(media_type(r) == "application/dicom+json",
           f"metadata Content-Type {r.headers.get('Content-Type')!r}, expected application/dicom+json")
    obj = json_body(r, "instance metadata")
    expect(isinstance(obj, list) and len(obj) == 1, "instance metadata must be a JSON array with one data set")
    check_metadata_item(obj[0], ct, "instance metadata")
    via_client = ctx.client.retrieve_instance_metadata(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID),
                                                       str(ct.SOPInstanceUID))
    expect(value(via_client, "SOPInstanceUID") == str(ct.SOPInstanceUID), "client metadata: wrong instance")


@check("metadata_series", "WADO-RS series metadata: one data set per instance of the series")
def c_metadata_series(ctx: Ctx):
    _, mr1, mr2 = metadata_fixture(ctx)
    items = ctx.client.retrieve_series_metadata(str(mr1.StudyInstanceUID), str(mr1.SeriesInstanceUID))
    by = {value(i, "SOPInstanceUID"): i for i in items}
    expect(set(by) == {str(mr1.SOPInstanceUID), str(mr2.SOPInstanceUID)},
           f"series metadata: expected the 2 instances of the series, got {len(items)} data sets")
    for want in (mr1, mr2):
        check_metadata_item(by[str(want.SOPInstanceUID)], want, "series metadata")


@check("metadata_study", "WADO-RS study metadata: one data set per instance of the study")
def c_metadata_study(ctx: Ctx):
    srcs = metadata_fixture(ctx)
    items = ctx.client.retrieve_study_metadata(str(srcs[0].StudyInstanceUID))
    by = {value(i, "SOPInstanceUID"): i for i in items}
    expect(set(by) == {str(d.SOPInstanceUID) for d in srcs},
           f"study metadata: expected the 3 instances of the study, got {len(items)} data sets")
    for want in srcs:
        check_metadata_item(by[str(want.SOPInstanceUID)], want, "study metadata")


def bulk_uri(ctx: Ctx, ds: Dataset, tag: str = "7FE00010") -> str:
    mpath = instance_path(ds) + "/metadata"
    r = ctx.get(mpath, headers={"Accept": ACCEPT_JSON})
    expect_status(r, 200)
    items = json_body(r, "metadata")
    expect(isinstance(items, list) and len(items) == 1, "instance metadata must be a JSON array with one data set")
    item = items[0]
    el = item.get(tag) or {}
    expect("BulkDataURI" in el, f"metadata has no BulkDataURI for {tag}")
    return urljoin(ctx.u(mpath), el["BulkDataURI"])


@check("bulkdata", "Retrieve the PixelData BulkDataURI from metadata: bytes equal the stored value")
def c_bulkdata(ctx: Ctx):
    ct = instance(ctx, "CT_small.dcm")
    store(ctx, [ct])
    uri = bulk_uri(ctx, ct)
    parts = ctx.client.retrieve_bulkdata(uri, media_types=("application/octet-stream",))
    expect(len(parts) == 1, f"bulk data retrieve: expected 1 part, got {len(parts)}")
    want = bytes(ct.PixelData)
    expect(parts[0] == want, f"bulk data differs from PixelData: {first_diff(parts[0], want)}")
    r = ctx.get(uri, headers={"Accept": ACCEPT_OCTET})
    expect_status(r, 200)
    ((hdrs, body),) = parse_multipart(r)
    expect(body == want, "raw bulk data part differs from PixelData")
    expect(hdrs.get("content-type", "").split(";")[0].strip() == "application/octet-stream",
           f"bulk data part Content-Type {hdrs.get('content-type')!r}")
    loc = hdrs.get("content-location")
    expect(loc is not None, "bulk data part has no Content-Location header (PS3.18 10.4.3.3.5)")
    expect(urlparse(urljoin(uri, loc)).path == urlparse(uri).path,
           f"bulk data part Content-Location {loc!r} does not match the BulkDataURI {uri!r}")


def frames_check(ctx: Ctx, files: list[str], media: str, ts: str | None):
    srcs = [instance(ctx, f) for f in files]
    store(ctx, srcs)
    for ds in srcs:
        nf = int(ds.get("NumberOfFrames", 1) or 1)
        numbers = [1] if nf == 1 else [1, 4, nf]
        label = f"{ds.file_meta.TransferSyntaxUID.name} {nf}-frame"
        args = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), numbers)
        if ts is None:
            got = ctx.client.retrieve_instance_frames(*args, media_types=("application/octet-stream",))
            expect(len(got) == len(numbers), f"{label}: asked {numbers}, got {len(got)} frames")
            for n, g in zip(numbers, got):
                w = frame_bytes_native(ds, n - 1)
                expect(g == w, f"{label} frame {n} (application/octet-stream): {first_diff(g, w)}")
            continue
        src = encapsulated_frames(ds)
        # With the transfer syntax named, the stored bitstream must come back
        # as is. Without it the media type's default syntax applies (PS3.18
        # Table 8.7.3-5: image/jpeg -> JPEG Lossless SV1 .70, image/jp2 ->
        # .90, image/dicom-rle -> RLE), so only compare when that default is
        # the stored syntax.
        variants = [(media, ts)] + ([media] if DEFAULT_FRAME_TS.get(media) == ts else [])
        for mt in variants:
            got = ctx.client.retrieve_instance_frames(*args, media_types=(mt,))
            expect(len(got) == len(numbers), f"{label} as {mt}: asked {numbers}, got {len(got)} frames")
            for n, g in zip(numbers, got):
                expect(same_frame(g, src[n - 1]),
                       f"{label} frame {n} as {mt}: not the stored bitstream: {first_diff(g, src[n - 1])}")
        r = ctx.get(instance_path(ds) + f"/frames/{numbers[0]}",
                    headers={"Accept": f'multipart/related; type="{media}"; transfer-syntax={ts}'})
        expect_status(r, 200)
        hdrs = parse_multipart(r)[0][0]
        expect(hdrs.get("content-type", "").split(";")[0].strip() == media,
               f"{label}: frame part Content-Type {hdrs.get('content-type')!r}, expected {media}")
        if ts == JPEG_BASELINE:
            got = ctx.client.retrieve_instance_frames(*args, media_types=("application/octet-stream",))
            size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
            expect(len(got[0]) == size, f"{label}: decoded frame is {len(got[0])} bytes, expected {size}")
            note("JPEG Baseline is lossy: the decoded frame is checked for size only")
            continue
        dec = decoded_frames(ds)
        if dec is None:
            continue
        got = ctx.client.retrieve_instance_frames(*args, media_types=("application/octet-stream",))
        expect(len(got) == len(numbers), f"{label} decoded: asked {numbers}, got {len(got)} frames")
        for n, g in zip(numbers, got):
            expect(g == dec[n - 1], f"{label} frame {n} decoded (application/octet-stream) differs from "
                                    f"pydicom's decoding: {first_diff(g, dec[n - 1])}")


@check("frames_uncompressed", "WADO-RS frames as application/octet-stream, byte-exact (single and multi-frame)")
def c_frames_uncompressed(ctx: Ctx):
    frames_check(ctx, ["CT_small.dcm", "emri_small.dcm"], "application/octet-stream", None)


@check("frames_jpeg", "WADO-RS frames of JPEG Baseline: image/jpeg bitstream byte-exact")
def c_frames_jpeg(ctx: Ctx):
    frames_check(ctx, ["SC_rgb_jpeg_dcmtk.dcm"], "image/jpeg", JPEG_BASELINE)


@check("frames_rle", "WADO-RS frames of RLE: image/dicom-rle byte-exact, octet-stream equals decoded pixels")
def c_frames_rle(ctx: Ctx):
    frames_check(ctx, ["MR_small_RLE.dcm", "emri_small_RLE.dcm"], "image/dicom-rle", RLE)


@check("frames_jpeg2000", "WADO-RS frames of JPEG 2000 lossless: image/jp2 byte-exact, octet-stream decoded exact")
def c_frames_j2k(ctx: Ctx):
    frames_check(ctx, ["MR_small_jp2klossless.dcm", "emri_small_jpeg_2k_lossless.dcm"], "image/jp2", J2K_LOSSLESS)


def query(params: dict | None) -> str | None:
    """Query string with the commas of list values (viewport, window) left
    literal, as PS3.18 writes them; everything else percent-encoded."""
    if not params:
        return None
    return "&".join(f"{quote(k, safe='')}={quote(str(v), safe=',')}" for k, v in params.items())


def get_image(ctx: Ctx, path: str, accept: str, params=None, what: str = "") -> tuple[Image.Image, requests.Response]:
    r = ctx.get(path, headers={"Accept": accept}, params=query(params))
    expect_status(r, 200, what=f"{what} GET {path} ({accept}, {params})")
    expect(media_type(r) == accept, f"{what}: Content-Type {r.headers.get('Content-Type')!r}, expected {accept}")
    fmt = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}[accept]
    return image_from(r.content, f"{what} {path}", fmt), r


@check("rendered_instance", "Rendered instance: JPEG/PNG size, viewport scaling, window changes pixels as specified")
def c_rendered_instance(ctx: Ctx):
    ct = instance(ctx, "CT_small.dcm")
    store(ctx, [ct])
    p = instance_path(ct) + "/rendered"
    soft = Soft()

    def formats():
        for accept in ("image/jpeg", "image/png"):
            img, _ = get_image(ctx, p, accept, what="rendered")
            expect(img.size == (ct.Columns, ct.Rows),
                   f"rendered {accept}: size {img.size}, expected {(ct.Columns, ct.Rows)}")
        via_client = ctx.client.retrieve_instance_rendered(str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID),
                                                           str(ct.SOPInstanceUID), media_types=("image/png",))
        expect(image_from(via_client, "client rendered", "PNG").size == (ct.Columns, ct.Rows),
               "client rendered size")

    def viewport():
        img, _ = get_image(ctx, p, "image/png", {"viewport": "64,64"}, what="viewport")
        expect(img.size == (64, 64), f"viewport=64,64 on a 128x128 image: size {img.size}, expected (64, 64)")
        img, _ = get_image(ctx, p, "image/png", {"viewport": "64,32"}, what="viewport")
        # The square image must keep its aspect ratio: either scaled to fit
        # (32x32), or letter-boxed in a 64x32 canvas with uniform side bands.
        if img.size == (64, 32):
            g = gray(img)
            left, right, mid = g[:, :16], g[:, 48:], g[:, 16:48]
            expect(left.std() < 2 and right.std() < 2 and mid.std() > 5,
                   "viewport=64,32 on a 128x128 image gave 64x32 with image content in the side bands: "
                   "stretched instead of keeping the aspect ratio")
        else:
            expect(img.size == (32, 32),
                   f"viewport=64,32 on a 128x128 image: size {img.size}, expected 32x32 (fit, aspect kept) "
                   "or 64x32 letter-boxed")

    hu = modality_values(ct)
    lo, hi = float(hu.min()), float(hu.max())

    def window_extremes():
        bright, _ = get_image(ctx, p, "image/png", {"window": f"{lo - 1000:.0f},10,linear"}, what="window")
        dark, _ = get_image(ctx, p, "image/png", {"window": f"{hi + 1000:.0f},10,linear"}, what="window")
        g_b, g_d = gray(bright), gray(dark)
        expect(g_b.min() >= 250, f"window below all values: expected an all-white image, min gray {g_b.min():.0f}")
        expect(g_d.max() <= 5, f"window above all values: expected an all-black image, max gray {g_d.max():.0f}")

    def window_linear():
        full, _ = get_image(ctx, p, "image/png", {"window": full_range_window(hu)}, what="window")
        c = corr(gray(full), hu)
        expect(c > 0.98, f"full-range linear window: rendered pixels correlate {c:.3f} with the modality values "
                         "(expected > 0.98: wrong pixels, orientation or window)")
        narrow, _ = get_image(ctx, p, "image/png", {"window": f"{(lo + hi) / 2:.0f},{(hi - lo) / 8:.0f},linear"},
                              what="window")
        expect(not np.array_equal(gray(narrow), gray(full)), "a different window gave the same image")

    for part in (formats, viewport, window_extremes, window_linear):
        soft.run(part)
    soft.done()


@check("rendered_frame", "Rendered frames of a multi-frame image: the right frame, JPEG and PNG")
def c_rendered_frame(ctx: Ctx):
    mf = instance(ctx, "emri_small.dcm")
    store(ctx, [mf])
    base = instance_path(mf) + "/frames/{}/rendered"
    for n in (1, 7):
        vals = modality_values(mf, n - 1)
        img, _ = get_image(ctx, base.format(n), "image/png", {"window": full_range_window(vals)}, what="frame")
        expect(img.size == (mf.Columns, mf.Rows), f"frame {n} rendered size {img.size}")
        c_own = corr(gray(img), vals)
        other = modality_values(mf, 9 if n == 1 else 0)
        c_other = corr(gray(img), other)
        expect(c_own > 0.98 and c_own > c_other,
               f"rendered frame {n} correlates {c_own:.3f} with frame {n} and {c_other:.3f} with another frame")
        img, _ = get_image(ctx, base.format(n), "image/jpeg", what="frame")
        expect(img.size == (mf.Columns, mf.Rows), f"frame {n} rendered JPEG size {img.size}")
    via_client = ctx.client.retrieve_instance_frames_rendered(
        str(mf.StudyInstanceUID), str(mf.SeriesInstanceUID), str(mf.SOPInstanceUID), [2],
        media_types=("image/jpeg",))
    image_from(via_client, "client rendered frame", "JPEG")


def images_in(r: requests.Response, what: str) -> list[Image.Image]:
    if media_type(r).startswith("multipart/"):
        parts = parse_multipart(r)
        expect(parts, f"{what}: empty multipart response")
        return [image_from(b, f"{what} part {i}") for i, (_, b) in enumerate(parts)]
    return [image_from(r.content, what)]


@check("rendered_series_study", "Rendered series and study: decodable images")
def c_rendered_series_study(ctx: Ctx):
    srcs = retrieve_fixture(ctx)
    ct = srcs[0]
    sizes = {(d.Columns, d.Rows) for d in srcs}
    window = full_range_window(modality_values(ct))
    soft = Soft()
    for path, count in ((f"studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/rendered", 2),
                        (f"studies/{ct.StudyInstanceUID}/rendered", 4)):
        def one():
            r = ctx.get(path, headers={"Accept": "image/jpeg"}, params=query({"window": window}))
            expect_status(r, 200)
            imgs = images_in(r, path)
            expect(all(i.format == "JPEG" for i in imgs), f"{path}: not all parts are JPEG")
            expect(all(i.size in sizes for i in imgs),
                   f"{path}: image sizes {[i.size for i in imgs]} are not those of the instances {sorted(sizes)}")
            if len(imgs) > 1:
                expect(len(imgs) == count, f"{path}: {len(imgs)} images for {count} instances")
            cts = [i for i in imgs if i.size == (ct.Columns, ct.Rows)]
            if count == 2 or len(imgs) > 1:
                expect(cts, f"{path}: no rendering of the CT instances")
                c = corr(gray(cts[0]), modality_values(ct))
                expect(c > 0.9, f"{path}: the CT rendering correlates {c:.2f} with the CT's pixels")
        soft.run(one)
    soft.done()


@check("thumbnail", "Thumbnails of instance, frame, series, study: one image each, viewport honoured")
def c_thumbnail(ctx: Ctx):
    study = pydicom.uid.generate_uid()
    ct = instance(ctx, "CT_small.dcm", study=study)
    mf = instance(ctx, "emri_small.dcm", study=study)
    store(ctx, [ct, mf])
    paths = [instance_path(ct) + "/thumbnail", instance_path(mf) + "/frames/3/thumbnail",
             f"studies/{study}/series/{ct.SeriesInstanceUID}/thumbnail", f"studies/{study}/thumbnail"]
    soft = Soft()

    def one(p):
        for accept in ("image/jpeg", "image/png"):
            img, r = get_image(ctx, p, accept, what="thumbnail")
            expect(max(img.size) <= 1024 and min(img.size) > 0, f"{p}: odd thumbnail size {img.size}")
        img, _ = get_image(ctx, p, "image/jpeg", {"viewport": "32,32"}, what="thumbnail viewport")
        expect(img.size[0] <= 32 and img.size[1] <= 32 and max(img.size) == 32,
               f"{p}?viewport=32,32: size {img.size}, expected to fit 32x32 with one side 32")

    for p in paths:
        soft.run(one, p)
    soft.done()


def wado_uri(ctx: Ctx) -> str:
    if ctx.wado_uri:
        return ctx.wado_uri
    p = urlparse(ctx.url)
    return f"{p.scheme}://{p.netloc}/wado"


def wado_params(ds: Dataset, **extra) -> dict:
    return {"requestType": "WADO", "studyUID": str(ds.StudyInstanceUID), "seriesUID": str(ds.SeriesInstanceUID),
            "objectUID": str(ds.SOPInstanceUID), **extra}


@check("wado_uri_dicom", "WADO-URI contentType=application/dicom: the stored instance, data set byte-equal")
def c_wado_uri_dicom(ctx: Ctx):
    ct = instance(ctx, "CT_small.dcm")
    store(ctx, [ct])
    r = ctx.get(wado_uri(ctx), params=wado_params(ct, contentType="application/dicom"))
    expect_status(r, 200)
    expect(media_type(r) == "application/dicom", f"WADO-URI Content-Type {r.headers.get('Content-Type')!r}")
    _, got = split_part10(r.content)
    _, want = split_part10(encode(ct))
    expect(got == want, f"WADO-URI data set bytes differ from those stored: {first_diff(got, want)}")
    got_ds = pydicom.dcmread(io.BytesIO(r.content))
    expect(str(got_ds.file_meta.TransferSyntaxUID) == ExplicitVRLittleEndian, "WADO-URI transfer syntax")
    r = ctx.get(wado_uri(ctx), params=wado_params(ct, contentType="application/dicom",
                                                  transferSyntax=ExplicitVRLittleEndian))
    expect_status(r, 200)
    expect(split_part10(r.content)[1] == want, "WADO-URI with transferSyntax=Explicit VR LE: data set differs")


@check("wado_uri_jpeg", "WADO-URI contentType=image/jpeg (and the default): a JPEG of the right size")
def c_wado_uri_jpeg(ctx: Ctx):
    ct = instance(ctx, "CT_small.dcm")
    store(ctx, [ct])
    for params in (wado_params(ct, contentType="image/jpeg"), wado_params(ct)):
        r = ctx.get(wado_uri(ctx), params=params)
        expect_status(r, 200)
        expect(media_type(r) == "image/jpeg", f"WADO-URI {params.get('contentType', '(no contentType)')}: "
                                              f"Content-Type {r.headers.get('Content-Type')!r}")
        img = image_from(r.content, "WADO-URI JPEG", "JPEG")
        expect(img.size == (ct.Columns, ct.Rows), f"WADO-URI JPEG size {img.size}")
        c = corr(gray(img), modality_values(ct))
        expect(c > 0.5, f"WADO-URI JPEG correlates only {c:.2f} with the image's pixels")


@check("wado_uri_errors", "WADO-URI: missing or invalid parameters -> 400, unknown object -> 404")
def c_wado_uri_errors(ctx: Ctx):
    ct = instance(ctx, "CT_small.dcm")
    store(ctx, [ct])
    soft = Soft()
    p = wado_params(ct, contentType="application/dicom")
    del p["objectUID"]
    soft.run(expect_status, ctx.get(wado_uri(ctx), params=p), 400, what="WADO-URI without objectUID")
    soft.run(expect_status, ctx.get(wado_uri(ctx), params=wado_params(ct, requestType="XYZ")), 400,
             what="WADO-URI with requestType=XYZ")
    unknown = wado_params(ct, contentType="application/dicom", objectUID=pydicom.uid.generate_uid())
    soft.run(expect_status, ctx.get(wado_uri(ctx), params=unknown), 404, what="WADO-URI for an unknown objectUID")
    soft.done()


@check("http_range", "Range on a BulkDataURI: 206 with exactly the requested bytes")
def c_http_range(ctx: Ctx):
    ct = instance(ctx, "CT_small.dcm")
    store(ctx, [ct])
    uri = bulk_uri(ctx, ct)
    want = bytes(ct.PixelData)
    for rng, sl in (("bytes=100-1123", slice(100, 1124)), ("bytes=-64", slice(len(want) - 64, None))):
        r = ctx.get(uri, headers={"Accept": ACCEPT_OCTET, "Range": rng})
        expect_status(r, 206, what=f"bulk data with Range: {rng}")
        body = parse_multipart(r)[0][1] if media_type(r).startswith("multipart/") else r.content
        expect(body == want[sl], f"Range {rng}: got {len(body)} bytes, not the requested slice: "
                                 f"{first_diff(body, want[sl])}")
    parts = ctx.client.retrieve_bulkdata(uri, media_types=("application/octet-stream",), byte_range=(0, 15))
    expect(parts and parts[0] == want[:16], "dicomweb-client byte_range=(0, 15): wrong bytes")
    # RFC 9110 14.2: a Range the server does not serve is ignored (200 with
    # the whole value): a reversed range, another unit, several ranges, and
    # any Range under an If-Range whose validator does not match.
    for headers in ({"Range": "bytes=10-5"}, {"Range": "items=0-1"}, {"Range": "bytes=0-1,4-5"},
                    {"Range": "bytes=0-9", "If-Range": '"some-other-etag"'}):
        r = ctx.get(uri, headers={"Accept": ACCEPT_OCTET, **headers})
        expect_status(r, 200, what=f"bulk data with {headers}")
        body = parse_multipart(r)[0][1] if media_type(r).startswith("multipart/") else r.content
        expect(body == want, f"{headers}: the whole value was not sent")
    r = ctx.get(uri, headers={"Accept": ACCEPT_OCTET, "Range": f"bytes={len(want)}-"})
    expect_status(r, 416, what="bulk data with a Range past the end")


@check("http_gzip", "JSON responses are gzip-encoded when asked with Accept-Encoding: gzip")
def c_http_gzip(ctx: Ctx):
    _, mr1, _ = metadata_fixture(ctx)
    path = f"studies/{mr1.StudyInstanceUID}/series/{mr1.SeriesInstanceUID}/metadata"
    r = ctx.get(path, headers={"Accept": ACCEPT_JSON, "Accept-Encoding": "gzip"}, stream=True)
    expect_status(r, 200)
    expect(r.headers.get("Content-Encoding", "").lower() == "gzip",
           f"series metadata with Accept-Encoding: gzip: Content-Encoding {r.headers.get('Content-Encoding')!r}")
    raw = r.raw.read(decode_content=False)
    try:
        plain = gzip.decompress(raw)
    except OSError as e:
        fail(f"gzip body does not decompress: {e}")
    expect(len(json.loads(plain)) == 2, "decompressed metadata is not a 2-item JSON array")
    r = ctx.get(path, headers={"Accept": ACCEPT_JSON, "Accept-Encoding": "identity"})
    expect_status(r, 200)
    expect(r.headers.get("Content-Encoding", "identity").lower() == "identity",
           f"Accept-Encoding: identity still got Content-Encoding {r.headers.get('Content-Encoding')!r}")
    r = ctx.get("studies", params={"PatientID": str(mr1.PatientID), "includefield": "all"},
                headers={"Accept": ACCEPT_JSON, "Accept-Encoding": "gzip"})
    expect_status(r, 200)
    if len(r.content) >= 1024:
        expect(r.headers.get("Content-Encoding", "").lower() == "gzip",
               f"QIDO response of {len(r.content)} bytes not gzip-encoded")


@check("http_etag", "Metadata ETag: If-None-Match gives 304; the ETag changes when the series changes")
def c_http_etag(ctx: Ctx):
    _, mr1, mr2 = metadata_fixture(ctx)
    ipath = instance_path(mr1) + "/metadata"
    r = ctx.get(ipath, headers={"Accept": ACCEPT_JSON})
    expect_status(r, 200)
    etag = r.headers.get("ETag")
    expect(etag, "instance metadata response has no ETag header")
    r2 = ctx.get(ipath, headers={"Accept": ACCEPT_JSON, "If-None-Match": etag})
    expect_status(r2, 304, what="instance metadata with If-None-Match: <its ETag>")
    expect(r2.content == b"", "304 response has a body")
    r3 = ctx.get(ipath, headers={"Accept": ACCEPT_JSON, "If-None-Match": '"not-the-etag"'})
    expect_status(r3, 200, what="instance metadata with a non-matching If-None-Match")
    spath = f"studies/{mr1.StudyInstanceUID}/series/{mr1.SeriesInstanceUID}/metadata"
    r = ctx.get(spath, headers={"Accept": ACCEPT_JSON})
    expect_status(r, 200)
    setag = r.headers.get("ETag")
    expect(setag, "series metadata response has no ETag header")
    expect_status(ctx.get(spath, headers={"Accept": ACCEPT_JSON, "If-None-Match": setag}), 304,
                  what="series metadata with If-None-Match: <its ETag>")
    mr3 = instance(ctx, "MR_small.dcm", study=str(mr1.StudyInstanceUID), series=str(mr1.SeriesInstanceUID),
                   InstanceNumber=3)
    store(ctx, [mr3])
    r = ctx.get(spath, headers={"Accept": ACCEPT_JSON, "If-None-Match": setag})
    expect_status(r, 200, what="series metadata with the old ETag after a new instance was added")
    expect(len(r.json()) == 3, "series metadata after adding an instance does not list 3 instances")
    expect(r.headers.get("ETag") not in (None, setag), "series ETag did not change after adding an instance")


@check("http_bad_params", "Invalid QIDO parameters -> 400 with a readable message")
def c_http_bad_params(ctx: Ctx):
    cases = [
        ({"limit": "abc"}, ("limit", "abc")),
        ({"offset": "-1"}, ("offset", "-1")),
        ({"StudyDate": "2020"}, ("StudyDate", "2020", "00080020")),
        ({"StudyDate": "20200101-20200201-20200301"}, ("StudyDate", "00080020", "20200101-20200201-20200301")),
        ({"StudyDate": "2020AB01"}, ("StudyDate", "00080020", "2020AB01")),
        ({"fuzzymatching": "maybe"}, ("fuzzymatching", "maybe")),
    ]
    soft = Soft()

    def one(params, words):
        r = ctx.get("studies", params=params, headers={"Accept": ACCEPT_JSON})
        expect_status(r, 400, what=f"QIDO-RS /studies?{'&'.join(f'{k}={v}' for k, v in params.items())}")
        text = r.content.decode("utf-8", "replace")
        expect(text.strip(), f"400 for {params} has an empty body; expected a message naming the problem")
        expect(any(w.lower() in text.lower() for w in words),
               f"400 for {params}: the message {text[:120]!r} names none of {words}")

    for params, words in cases:
        soft.run(one, params, words)
    soft.done()


@check("hostile_params", "Sizes, windows, dates and frame lists a hostile client sends -> 400 or bounded work")
def c_hostile_params(ctx: Ctx):
    ct = instance(ctx, "CT_small.dcm")
    store(ctx, [ct])
    soft = Soft()
    huge = wado_params(ct, contentType="image/jpeg", columns="1000000000", rows="1000000000")
    soft.run(expect_status, ctx.get(wado_uri(ctx), params=huge), 400, what="WADO-URI columns=1000000000")
    nan = wado_params(ct, contentType="image/jpeg", windowCenter="NaN", windowWidth="NaN")
    soft.run(expect_status, ctx.get(wado_uri(ctx), params=nan), 400, what="WADO-URI windowCenter=NaN")
    soft.run(expect_status, ctx.get(instance_path(ct) + "/rendered", params={"window": "NaN,NaN"},
                                    headers={"Accept": "image/jpeg"}), 400, what="rendered window=NaN,NaN")
    for params in ({"StudyDate": "20201340"}, {"StudyTime": "abc"}, {"PatientName": "\x00"},
                   {"PatientName": "A\x00*"}):
        soft.run(expect_status, ctx.get("studies", params=params, headers={"Accept": ACCEPT_JSON}), 400,
                 what=f"QIDO-RS {params!r}")

    def repeated_frames():
        # 5,000 repeats of frame 1 are one frame, not 5,000 copies of it.
        r = ctx.get(instance_path(ct) + "/frames/" + ",".join(["1"] * 5000),
                    headers={"Accept": 'multipart/related; type="application/octet-stream"'})
        expect_status(r, 200, what="frames/1,1,1,...")
        parts = parse_multipart(r)
        expect(len(parts) == 1, f"frames/1,1,1,... sent {len(parts)} parts, expected 1")
        expect(parts[0][1] == frame_bytes_native(ct, 0), "the one frame sent is not frame 1")

    soft.run(repeated_frames)
    r = ctx.get("studies", params={"PatientID": str(ct.PatientID)}, headers={"Accept": ACCEPT_JSON})
    soft.run(expect_status, r, 200, what="QIDO-RS after the hostile requests")
    soft.done()


@check("rendered_under_load", "50 concurrent rendered requests on a JPEG 2000 series: 200 or 503 + Retry-After")
def c_rendered_under_load(ctx: Ctx):
    from concurrent.futures import ThreadPoolExecutor
    mf = instance(ctx, "emri_small_jpeg_2k_lossless.dcm")
    store(ctx, [mf])
    url = ctx.url.rstrip("/") + "/" + instance_path(mf) + "/rendered"
    headers = {"Accept": "image/jpeg", **({"Authorization": f"Bearer {BEARER}"} if BEARER else {})}

    def one(_):
        r = requests.get(url, headers=headers, timeout=120)
        return r.status_code, r.headers.get("Retry-After"), r.content

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(one, range(50)))
    statuses = sorted({a[0] for a in answers})
    expect(set(statuses) <= {200, 503}, f"statuses {statuses}")
    expect(any(a[0] == 200 for a in answers), "no request was rendered")
    for status, retry, body in answers:
        if status == 503:
            expect(retry is not None, "a 503 without Retry-After")
        else:
            image_from(body, "rendered under load", "JPEG")
    note(f"{sum(a[0] == 503 for a in answers)} of 50 answered 503")
    r = ctx.get("studies", params={"PatientID": str(mf.PatientID)}, headers={"Accept": ACCEPT_JSON})
    expect_status(r, 200, what="QIDO-RS after the burst")


# --------------------------------------------------------------------- main

def run_check(args, name: str) -> bool:
    fn, doc = CHECKS[name]
    ctx = make_ctx(args.url, args.wado_uri, name)
    t0 = time.monotonic()
    try:
        fn(ctx)
    except CheckFailed as e:
        print(f"FAIL {name}: {e}", flush=True)
        if ctx.exchanges:
            print("  last HTTP exchanges:\n    " + "\n    ".join(ctx.exchanges[-6:]), flush=True)
        return False
    except requests.HTTPError as e:
        r = e.response
        print(f"FAIL {name}: HTTP {r.status_code} from {r.request.method} {r.url}: {r.content[:300]!r}",
              flush=True)
        if ctx.exchanges:
            print("  last HTTP exchanges:\n    " + "\n    ".join(ctx.exchanges[-6:]), flush=True)
        return False
    except SetupError:
        raise
    except requests.ConnectionError as e:
        print(f"FAIL {name}: connection failed (a URL given by the server?): {e}", flush=True)
        if ctx.exchanges:
            print("  last HTTP exchanges:\n    " + "\n    ".join(ctx.exchanges[-6:]), flush=True)
        return False
    except Exception as e:  # noqa: BLE001 - anything else is a failure of the server's answer
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc(limit=4)
        if ctx.exchanges:
            print("  last HTTP exchanges:\n    " + "\n    ".join(ctx.exchanges[-6:]), flush=True)
        return False
    print(f"PASS {name} ({time.monotonic() - t0:.1f}s)", flush=True)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="DICOMweb (PS3.18) conformance checks.")
    ap.add_argument("--url", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicom-web")
    ap.add_argument("--wado-uri", help="WADO-URI endpoint (default: <scheme://host:port>/wado)")
    ap.add_argument("--bearer", help="send Authorization: Bearer TOKEN on every request")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", help="run one named check")
    g.add_argument("--list", action="store_true", help="print the check names")
    g.add_argument("--all", action="store_true", help="run every check and print a summary")
    args = ap.parse_args(argv)
    if args.list:
        for name, (_, doc) in CHECKS.items():
            print(f"{name}\t{doc}")
        return 0
    if not args.url:
        ap.error("--url is required")
    global BEARER
    BEARER = args.bearer
    auth = {"Authorization": f"Bearer {BEARER}"} if BEARER else {}
    try:
        probe = requests.get(args.url.rstrip("/") + "/studies", params={"limit": "1"},
                             headers={"Accept": ACCEPT_JSON, **auth}, timeout=10)
    except requests.RequestException as e:
        print(f"dicomweb_suite: cannot reach {args.url}: {e}", file=sys.stderr)
        return 2
    if probe.status_code >= 500 or probe.status_code == 404:
        print(f"dicomweb_suite: {args.url}/studies answered HTTP {probe.status_code}; is this a DICOMweb root?",
              file=sys.stderr)
    try:
        if args.check:
            if args.check not in CHECKS:
                print(f"dicomweb_suite: unknown check {args.check!r}; --list shows the names", file=sys.stderr)
                return 2
            return 0 if run_check(args, args.check) else 1
        passed = failed = 0
        failed_names = []
        for name in CHECKS:
            if run_check(args, name):
                passed += 1
            else:
                failed += 1
                failed_names.append(name)
        if failed_names:
            print("failed: " + " ".join(failed_names))
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0
    except SetupError as e:
        print(f"dicomweb_suite: setup error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
