"""A minimal DICOM Upper Layer / DIMSE client for timing C-FIND servers.

It does just enough to send Study Root C-FIND requests and count the answers:
it never decodes a response identifier (it only reads each response's command
set for its Status), so its timings are the server's and the loopback's, not
those of a Python DICOM decoder. pynetdicom, by comparison, decodes every
pending response into a Dataset.

    from dimse_raw import RawFindClient, encode_identifier
    ident = encode_identifier(ds)                # once, outside the timing
    with RawFindClient("127.0.0.1", 11112, "TESSERA") as c:
        matches = c.find(ident)                  # pending responses counted

Only what that needs: one presentation context (Study Root Query/Retrieve
FIND, Implicit VR Little Endian), one outstanding request at a time, no
cancel. Anything unexpected (rejection, abort, a failure status) raises
DimseError.
"""

from __future__ import annotations

import socket
import struct

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

APP_CONTEXT = "1.2.840.10008.3.1.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
IMPLEMENTATION_UID = "2.25.164162344814074210844395626425504663576"  # this client's, made once from a UUID
IMPLEMENTATION_VERSION = b"TESSERA_RAWFIND"
PC_ID = 1
PENDING = (0xFF00, 0xFF01)


class DimseError(Exception):
    pass


def encode_identifier(ds: Dataset) -> bytes:
    """The identifier as Implicit VR Little Endian bytes (call before timing)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()


def _item(kind: int, body: bytes) -> bytes:
    # Upper Layer variable item: type, reserved, 2-byte big-endian length
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body)) + body


def _element(elem: int, value: bytes) -> bytes:
    # command set: group 0000, Implicit VR Little Endian; values have even length
    if len(value) % 2:
        value += b"\0"  # UI padding
    return struct.pack("<HHL", 0x0000, elem, len(value)) + value


def _command_set(message_id: int, sop_class: str = STUDY_ROOT_FIND) -> bytes:
    body = (_element(0x0002, sop_class.encode())                  # AffectedSOPClassUID
            + _element(0x0100, struct.pack("<H", 0x0020))         # CommandField: C-FIND-RQ
            + _element(0x0110, struct.pack("<H", message_id))     # MessageID
            + _element(0x0700, struct.pack("<H", 0x0000))         # Priority: MEDIUM
            + _element(0x0800, struct.pack("<H", 0x0102)))        # CommandDataSetType: a data set follows
    return _element(0x0000, struct.pack("<L", len(body))) + body  # CommandGroupLength first


def _command_status(cmd: bytes) -> tuple[int | None, int | None]:
    """(Status, MessageIDBeingRespondedTo) from an Implicit VR LE command set."""
    status = responding = None
    i = 0
    while i + 8 <= len(cmd):
        _group, elem, length = struct.unpack_from("<HHL", cmd, i)
        if elem == 0x0900:
            status = struct.unpack_from("<H", cmd, i + 8)[0]
        elif elem == 0x0120:
            responding = struct.unpack_from("<H", cmd, i + 8)[0]
        i += 8 + length
    return status, responding


class RawFindClient:
    def __init__(self, host: str, port: int, called_aet: str, calling_aet: str = "FINDBENCH",
                 max_pdu: int = 65536, timeout: float = 120.0, sop_class: str = STUDY_ROOT_FIND):
        # The FIND SOP class of the one presentation context (a Modality
        # Worklist benchmark passes 1.2.840.10008.5.1.4.31).
        self.sop_class = sop_class
        self.sock = socket.create_connection((host, port), timeout=timeout)
        # Request = two PDUs in one send; without TCP_NODELAY a delayed ACK could stall it.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=1 << 16)
        self.message_id = 0
        self.peer_max_pdu = 0  # 0 = no limit
        try:
            self._associate(called_aet, calling_aet, max_pdu)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- PDUs

    def _read_pdu(self) -> tuple[int, bytes]:
        head = self.rfile.read(6)
        if len(head) < 6:
            raise DimseError("connection closed by the server")
        kind, _, length = struct.unpack(">BBL", head)
        body = self.rfile.read(length)
        if len(body) < length:
            raise DimseError("connection closed by the server in the middle of a PDU")
        if kind == 0x07:  # A-ABORT
            raise DimseError(f"A-ABORT from the server (source {body[2]}, reason {body[3]})")
        return kind, body

    def _associate(self, called: str, calling: str, max_pdu: int) -> None:
        pc = _item(0x20, bytes([PC_ID, 0, 0, 0])
                   + _item(0x30, self.sop_class.encode())
                   + _item(0x40, IMPLICIT_VR_LE.encode()))
        user = _item(0x50, _item(0x51, struct.pack(">L", max_pdu))
                     + _item(0x52, IMPLEMENTATION_UID.encode())
                     + _item(0x55, IMPLEMENTATION_VERSION))
        body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16)[:16] + calling.encode().ljust(16)[:16]
                + bytes(32) + _item(0x10, APP_CONTEXT.encode()) + pc + user)
        self.sock.sendall(_pdu(0x01, body))
        kind, body = self._read_pdu()
        if kind == 0x03:  # A-ASSOCIATE-RJ
            raise DimseError(f"association rejected (result {body[1]}, source {body[2]}, reason {body[3]})")
        if kind != 0x02:
            raise DimseError(f"expected A-ASSOCIATE-AC, got PDU type {kind:#04x}")
        accepted = False
        i = 68  # items start after version, reserved, AE titles and 32 reserved bytes
        while i + 4 <= len(body):
            item, length = body[i], struct.unpack_from(">H", body, i + 2)[0]
            value = body[i + 4:i + 4 + length]
            if item == 0x21 and value[0] == PC_ID:
                # value: id, reserved, result (0 = acceptance), reserved, transfer syntax sub-item
                if value[2] != 0:
                    raise DimseError(f"presentation context refused (result {value[2]})")
                ts = value[8:8 + struct.unpack_from(">H", value, 6)[0]].rstrip(b"\0").decode()
                if ts != IMPLICIT_VR_LE:
                    raise DimseError(f"presentation context accepted with transfer syntax {ts!r}")
                accepted = True
            elif item == 0x50:
                j = 0
                while j + 4 <= len(value):
                    sub, sl = value[j], struct.unpack_from(">H", value, j + 2)[0]
                    if sub == 0x51:
                        self.peer_max_pdu = struct.unpack_from(">L", value, j + 4)[0]
                    j += 4 + sl
            i += 4 + length
        if not accepted:
            raise DimseError("the A-ASSOCIATE-AC has no answer for the C-FIND presentation context")

    def _p_data(self, is_command: bool, payload: bytes) -> bytes:
        """payload as P-DATA-TF PDUs, fragmented to what the server accepts."""
        room = (self.peer_max_pdu or (1 << 20)) - 6  # PDV item: 4-byte length, context id, control byte
        out = []
        for off in range(0, max(len(payload), 1), room):
            frag = payload[off:off + room]
            control = (1 if is_command else 0) | (2 if off + room >= len(payload) else 0)
            out.append(_pdu(0x04, struct.pack(">LBB", len(frag) + 2, PC_ID, control) + frag))
        return b"".join(out)

    # ------------------------------------------------------------- C-FIND

    def find(self, identifier: bytes) -> int:
        """Send one C-FIND-RQ and read responses up to the final one.
        Returns the number of pending responses (= matches)."""
        self.message_id = self.message_id % 0xFFFF + 1
        request = self._p_data(True, _command_set(self.message_id, self.sop_class)) + self._p_data(False, identifier)
        self.sock.sendall(request)
        pending = 0
        cmd = bytearray()  # command fragments of the response being read
        while True:
            kind, body = self._read_pdu()
            if kind != 0x04:
                raise DimseError(f"expected P-DATA-TF, got PDU type {kind:#04x}")
            i = 0
            # several PDVs per PDU; a command set may span several PDVs / PDUs
            while i < len(body):
                length = struct.unpack_from(">L", body, i)[0]
                control = body[i + 5]
                if control & 1:  # command fragment; data fragments (identifiers) are skipped
                    cmd += body[i + 6:i + 4 + length]
                    if control & 2:  # last fragment of this command set
                        status, responding = _command_status(bytes(cmd))
                        cmd.clear()
                        if responding != self.message_id:
                            raise DimseError(f"response to message {responding}, expected {self.message_id}")
                        if status in PENDING:
                            pending += 1
                        elif status == 0x0000:
                            if i + 4 + length != len(body):
                                raise DimseError("data after the final C-FIND response")
                            return pending
                        else:
                            raise DimseError(f"C-FIND failed with status {status:#06x} after {pending} matches")
                i += 4 + length

    # ------------------------------------------------------------ release

    def release(self) -> None:
        self.sock.sendall(_pdu(0x05, bytes(4)))
        kind, _ = self._read_pdu()
        if kind != 0x06:
            raise DimseError(f"expected A-RELEASE-RP, got PDU type {kind:#04x}")
        self.close()

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.release()
        else:
            self.close()


# ------------------------------------------------------------- self-test
# python3 bench/dimse_raw.py: runs the client against (1) a scripted server
# that splits a response command set over two PDUs and packs a data PDV and
# the next command PDV into one PDU, and (2) a pynetdicom C-FIND SCP that
# must fragment to a tiny maximum PDU length.

def _scripted_server(listener: socket.socket, matches: int) -> None:
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as f:
        def read_pdu():
            kind, _, n = struct.unpack(">BBL", f.read(6))
            return kind, f.read(n)
        kind, rq = read_pdu()
        assert kind == 0x01
        ac_pc = _item(0x21, bytes([PC_ID, 0, 0, 0]) + _item(0x40, IMPLICIT_VR_LE.encode()))
        ac_user = _item(0x50, _item(0x51, struct.pack(">L", 16384)) + _item(0x52, b"1.2.3"))
        conn.sendall(_pdu(0x02, rq[:68] + _item(0x10, APP_CONTEXT.encode()) + ac_pc + ac_user))
        got_cmd = got_data = False
        while not (got_cmd and got_data):  # the request: command PDV, then data PDV
            kind, body = read_pdu()
            got_cmd |= body[5] == 3
            got_data |= body[5] == 2

        def rsp(status):
            return (_element(0x0100, struct.pack("<H", 0x8020)) + _element(0x0120, struct.pack("<H", 1))
                    + _element(0x0800, struct.pack("<H", 0x0102 if status else 0x0101))
                    + _element(0x0900, struct.pack("<H", status)))

        def pdv(control, payload):
            return struct.pack(">LBB", len(payload) + 2, PC_ID, control) + payload

        ident = b"\x10\x00\x20\x00\x04\x00\x00\x00PID1"
        out = b""
        for k in range(matches):
            cmd = rsp(0xFF00)
            if k % 2 == 0:  # command split over two PDUs, data alone
                out += _pdu(0x04, pdv(1, cmd[:10])) + _pdu(0x04, pdv(3, cmd[10:])) + _pdu(0x04, pdv(2, ident))
            else:  # command and data PDVs in one PDU
                out += _pdu(0x04, pdv(3, cmd) + pdv(2, ident))
        out += _pdu(0x04, pdv(3, rsp(0x0000)))
        conn.sendall(out)
        kind, _ = read_pdu()
        assert kind == 0x05
        conn.sendall(_pdu(0x06, bytes(4)))


def _self_test() -> None:
    import threading

    ds = Dataset()
    ds.QueryRetrieveLevel, ds.PatientID, ds.StudyInstanceUID = "STUDY", "PID*", ""
    ident = encode_identifier(ds)

    listener = socket.create_server(("127.0.0.1", 0))
    th = threading.Thread(target=_scripted_server, args=(listener, 5))
    th.start()
    with RawFindClient("127.0.0.1", listener.getsockname()[1], "SCRIPTED") as c:
        assert c.find(ident) == 5
    th.join()
    listener.close()
    print("scripted server: ok")

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    def on_find(event):
        for k in range(7):
            if event.is_cancelled:
                return
            r = Dataset()
            r.QueryRetrieveLevel, r.PatientID, r.StudyInstanceUID = "STUDY", f"PID{k}", f"1.2.3.{k}"
            r.StudyComments = "x" * 300  # longer than the 256-byte PDUs below
            yield 0xFF00, r

    ae = AE("SCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind, IMPLICIT_VR_LE)
    scp = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    try:
        port = scp.socket.getsockname()[1]
        for max_pdu in (256, 65536):
            with RawFindClient("127.0.0.1", port, "SCP", max_pdu=max_pdu) as c:
                assert [c.find(ident) for _ in range(3)] == [7, 7, 7], max_pdu
        print("pynetdicom SCP, max PDU 256 and 65536: ok")
    finally:
        scp.shutdown()


if __name__ == "__main__":
    _self_test()
