"""A RIS's MLLP listener, with the `hl7` package's asyncio server: every
message received is appended to LOG as one JSON line (and synced) before
it is acknowledged, so a test can count exactly what arrived.

usage: mllp_listen.py PORT_FILE LOG [--port P] [--answer AA|AE|AR]

Binds 127.0.0.1 (port 0 unless --port), writes the port to PORT_FILE once
listening, and serves until killed.
"""
import argparse
import asyncio
import json
import os

import hl7
import hl7.mllp

p = argparse.ArgumentParser()
p.add_argument("port_file")
p.add_argument("log")
p.add_argument("--port", type=int, default=0)
p.add_argument("--answer", default="AA")
args = p.parse_args()


def field(message, segment, n):
    """The first component of a field, or "" when the segment is absent."""
    try:
        return str(message.extract_field(segment, 1, n, 1, 1))
    except (KeyError, IndexError):
        return ""


async def serve(reader, writer):
    try:
        while not reader.at_eof():
            message = await reader.readmessage()
            record = {
                "control_id": field(message, "MSH", 10),
                "type": field(message, "MSH", 9),
                "charset": field(message, "MSH", 18),
                "orc1": field(message, "ORC", 1),
                "orc5": field(message, "ORC", 5),
                "placer": field(message, "ORC", 2),
                "filler": field(message, "ORC", 3),
                "accession": field(message, "OBR", 18),
                "patient_id": field(message, "PID", 3),
                "patient_name": field(message, "PID", 5),
                "msa1": field(message, "MSA", 1),
                "msa2": field(message, "MSA", 2),
            }
            with open(args.log, "a", encoding="utf-8") as log:
                log.write(json.dumps(record, ensure_ascii=False) + "\n")
                log.flush()
                os.fsync(log.fileno())
            writer.writemessage(message.create_ack(ack_code=args.answer))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await hl7.mllp.start_hl7_server(
        serve, host="127.0.0.1", port=args.port, encoding="utf-8", reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, args.port_file)
    async with server:
        await server.serve_forever()


asyncio.run(main())
