"""C-MOVE throughput: Tessera vs Orthanc, same study, same destination.

Generates one study of N CT instances (512x512, 16-bit, explicit VR LE),
stores it into a fresh Tessera and a fresh Orthanc (Debian package), then
times `movescu` moving the study to a DCMTK `storescp` on this machine,
R times each, alternating. Prints a Markdown table with instances/s and the
Tessera/Orthanc ratio.

With --ignore the storescp receives every data set but writes nothing
(`storescp --ignore`), so the figure is how fast each server sends rather
than how fast one storescp writes files; completion is then taken from the
final C-MOVE response (Success means every sub-operation completed).

usage: move.py --tessera-bin PATH [--count 500] [--repeat 3] [--ignore] [--out FILE]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, TCP_NODELAY="1")  # Debian's DCMTK keeps Nagle on otherwise


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_echo(aet, port, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{aet} exited during startup")
        r = subprocess.run(["/usr/bin/echoscu", "-aec", aet, "127.0.0.1", str(port)],
                           capture_output=True, env=ENV)
        if r.returncode == 0:
            return
        time.sleep(0.2)
    raise SystemExit(f"{aet} did not answer C-ECHO")


def cpu_seconds(pid):
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {r.stderr[-2000:]}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera-bin", required=True)
    ap.add_argument("--orthanc-bin", default="/usr/sbin/Orthanc")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ignore", action="store_true", help="storescp --ignore: receive, do not write")
    ap.add_argument("--out")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tessera-move-")
    corpus = os.path.join(work, "corpus")
    run([sys.executable, os.path.join(HERE, "..", "tests", "peers", "gen.py"), corpus,
         "--count", str(args.count), "--rows", "512", "--cols", "512", "--seed", "5"])
    files = sorted(os.path.join(corpus, f) for f in os.listdir(corpus))
    size = sum(os.path.getsize(f) for f in files)
    import pydicom
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    dest_port = free_port()
    dest_dir = os.path.join(work, "dest")
    os.makedirs(dest_dir)
    receiver = ["--ignore"] if args.ignore else ["+xa", "-od", dest_dir]
    dest = subprocess.Popen(["/usr/bin/storescp", "--aetitle", "DEST"] + receiver + [str(dest_port)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [dest]
    try:
        wait_echo("DEST", dest_port, dest)
        # Tessera
        t_data = os.path.join(work, "tessera")
        t_cfg = os.path.join(work, "tessera.toml")
        with open(t_cfg, "w") as f:
            f.write(f'[[peers]]\nae_title = "DEST"\nhost = "127.0.0.1"\nport = {dest_port}\n')
        t_port = free_port()
        tessera = subprocess.Popen([args.tessera_bin, "--config", t_cfg, "--data-dir", t_data,
                                    "--dicom-bind", f"127.0.0.1:{t_port}", "--http-bind", f"127.0.0.1:{free_port()}",
                                    "serve"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(tessera)
        wait_echo("TESSERA", t_port, tessera)
        # Orthanc
        o_dir = os.path.join(work, "orthanc")
        os.makedirs(o_dir)
        o_port = free_port()
        cfg = {"Name": "bench", "StorageDirectory": os.path.join(o_dir, "storage"),
               "IndexDirectory": os.path.join(o_dir, "index"), "DicomAet": "ORTHANC", "DicomPort": o_port,
               "HttpPort": free_port(), "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
               "Plugins": [], "DicomAlwaysAllowMove": True,
               "DicomModalities": {"dest": ["DEST", "127.0.0.1", dest_port],
                                   "movescu": ["MOVESCU", "127.0.0.1", 104]}}
        o_cfg = os.path.join(work, "orthanc.json")
        with open(o_cfg, "w") as f:
            json.dump(cfg, f)
        orthanc = subprocess.Popen([args.orthanc_bin, o_cfg], env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(orthanc)
        wait_echo("ORTHANC", o_port, orthanc)
        for aet, port in (("TESSERA", t_port), ("ORTHANC", o_port)):
            run(["/usr/bin/storescu", "-aec", aet, "127.0.0.1", str(port)] + files)

        times = {"TESSERA": [], "ORTHANC": []}
        cpu = {"TESSERA": [], "ORTHANC": [], "DEST": []}
        pids = {"TESSERA": tessera.pid, "ORTHANC": orthanc.pid}
        for _ in range(args.repeat):
            for aet, port in (("TESSERA", t_port), ("ORTHANC", o_port)):
                cpu_before = cpu_seconds(pids[aet]), cpu_seconds(dest.pid)
                shutil.rmtree(dest_dir)
                os.makedirs(dest_dir)
                start = time.perf_counter()
                r = run(["/usr/bin/movescu", "-v", "-S", "-aec", aet, "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY",
                         "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(port)])
                elapsed = time.perf_counter() - start
                cpu[aet].append(cpu_seconds(pids[aet]) - cpu_before[0])
                if aet == "TESSERA":
                    cpu["DEST"].append(cpu_seconds(dest.pid) - cpu_before[1])
                if args.ignore:
                    if "Final Move Response (Success)" not in r.stdout + r.stderr:
                        raise SystemExit(f"{aet}: C-MOVE did not end in Success:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
                    times[aet].append(elapsed)
                    continue
                got = len(os.listdir(dest_dir))
                for _ in range(50):  # storescp may still be closing the last file
                    if got == args.count:
                        break
                    time.sleep(0.1)
                    got = len(os.listdir(dest_dir))
                if got != args.count:
                    raise SystemExit(f"{aet}: destination received {got} of {args.count}")
                times[aet].append(elapsed)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    t, o = statistics.median(times["TESSERA"]), statistics.median(times["ORTHANC"])
    lines = [
        f"One study of {args.count} CT instances ({size / 1e6:.0f} MB, explicit VR LE) moved with DCMTK "
        + ("movescu to a DCMTK storescp --ignore (receives, writes nothing) on the same machine; median of "
           if args.ignore else "movescu to a DCMTK storescp (+xa) on the same machine; median of ")
        + f"{args.repeat} runs each, alternating.",
        "",
        "| | Tessera | Orthanc | Tessera/Orthanc |",
        "|---|---:|---:|---:|",
        f"| wall time s | {t:.2f} | {o:.2f} | {t / o:.2f}x |",
        f"| instances/s | {args.count / t:.0f} | {args.count / o:.0f} | {o / t:.2f}x |",
        f"| MB/s | {size / 1e6 / t:.0f} | {size / 1e6 / o:.0f} | |",
        f"| server CPU s per move | {statistics.median(cpu['TESSERA']):.2f} | "
        f"{statistics.median(cpu['ORTHANC']):.2f} | |",
        "",
        f"storescp CPU per move from Tessera (median): {statistics.median(cpu['DEST']):.2f} s.",
        "",
        "All runs (s): Tessera " + ", ".join(f"{x:.2f}" for x in times["TESSERA"])
        + "; Orthanc " + ", ".join(f"{x:.2f}" for x in times["ORTHANC"]),
        "",
        "Command:",
        "",
        "```",
        "python3 " + " ".join(sys.argv),
        "```",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
