#!/usr/bin/env python3
"""C-STORE ingest benchmark: Tessera vs Orthanc on this machine, in one run.

    python3 bench/ingest.py --corpus DIR --tessera-bin PATH [--assocs 1,4]
                            [--targets tessera,orthanc] [--repeat R]
                            [--out results.md]

For every association count N and every target (interleaved: Tessera N,
Orthanc N, then the next N), and every repeat:

  1. start a fresh server with an empty data directory in a new temp dir on
     local disk, listening on 127.0.0.1 ports picked at random;
  2. wait (bounded) until it answers C-ECHO (DCMTK echoscu);
  3. split the corpus into N shards balanced on bytes and file count
     (contiguous in patient/study/series order, so a study mostly stays on
     one association)
     and start N DCMTK storescu processes at once, each sending its whole
     shard over ONE association, proposing each file's own SOP class and
     transfer syntax (-R); wall time runs from starting the first storescu to
     the exit of the last;
  4. count the C-STORE responses (Success / Warning / failure) in storescu's
     verbose log, and any transfer syntax conversion storescu had to do;
  5. read the server's peak RSS (VmHWM) and CPU time from /proc/PID before
     stopping it, and add up the size of its data directory.

Results go to stdout and to --out as Markdown, with the exact commands.
All traffic is on 127.0.0.1. Servers and senders are killed on every exit path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

HOST = "127.0.0.1"
CALLING_AET = "BENCHSCU"
STORESCU_PROFILE = "Bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Environment of every child (servers, echoscu, storescu). Debian's DCMTK
# (used by storescu, echoscu and Debian's Orthanc) leaves Nagle's algorithm on
# unless TCP_NODELAY is set in the environment; on loopback that costs a
# delayed-ACK stall (~40 ms) per C-STORE. main() sets TCP_NODELAY=1 here unless
# --dcmtk-nagle is given.
CHILD_ENV = dict(os.environ)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------- utils

def log(msg: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tail(path: str, n: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


def fs_type(path: str) -> str:
    """Filesystem type of the mount holding path (from /proc/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, f"{parts[2]} ({parts[0]} on {mnt})"
    except OSError:
        pass
    return kind


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS in KiB from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmHWM", "VmRSS", "Threads"):
                out[key] = int(val.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    v = [int(x) for x in parts[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    steal = v[7] if len(v) > 7 else 0
    return busy / CLK_TCK, steal / CLK_TCK


def machine_busy(exclude_pid: int, seconds: float = 0.5) -> float:
    """Fraction (0..1) of all CPUs busy over the next `seconds` with processes
    other than exclude_pid (the server, which may still be settling after
    answering C-ECHO); this script sleeps meanwhile."""
    b0, s0 = system_cpu()[0], proc_cpu_seconds(exclude_pid)
    t0 = time.perf_counter()
    time.sleep(seconds)
    b1, s1 = system_cpu()[0], proc_cpu_seconds(exclude_pid)
    other = max(0.0, (b1 - b0) - (s1 - s0))
    return other / ((time.perf_counter() - t0) * (os.cpu_count() or 1))


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def fsync_probe(directory: str, size: int = 512 * 1024, rounds: int = 20) -> float:
    """Median ms to create a file of `size` bytes, fdatasync it and fsync its dir."""
    buf = os.urandom(size)
    times = []
    dfd = os.open(directory, os.O_RDONLY)
    try:
        for i in range(rounds):
            path = os.path.join(directory, f"fsync-probe-{i}")
            t = time.perf_counter()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, buf)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.fsync(dfd)
            times.append(time.perf_counter() - t)
            os.unlink(path)
    finally:
        os.close(dfd)
    return 1000 * statistics.median(times)


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


# -------------------------------------------------------------------- corpus

@dataclass
class Corpus:
    root: str
    files: list[tuple[str, int]]  # (path, size), sorted by path
    contexts: list[tuple[str, str]]  # distinct (SOP class UID, transfer syntax UID)
    manifest: dict | None

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def bytes(self) -> int:
        return sum(s for _, s in self.files)


def is_dicom_part10(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def scan_corpus(root: str) -> Corpus:
    from pydicom.filereader import read_file_meta_info

    if not os.path.isdir(root):
        raise BenchError(f"corpus directory {root!r} does not exist")
    files, skipped = [], 0
    contexts: set[tuple[str, str]] = set()
    for dirpath, dirnames, names in os.walk(root):
        dirnames.sort()
        for name in sorted(names):
            p = os.path.join(dirpath, name)
            if not is_dicom_part10(p):
                if name != "manifest.json":
                    skipped += 1
                continue
            try:
                meta = read_file_meta_info(p)
                contexts.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
            except Exception as e:  # noqa: BLE001
                raise BenchError(f"cannot read the file meta information of {p}: {e}") from e
            files.append((os.path.abspath(p), os.path.getsize(p)))
    if not files:
        raise BenchError(f"no DICOM Part 10 files found under {root!r}")
    if skipped:
        log(f"corpus: skipped {skipped} non-DICOM files")
    if len(contexts) > 128:
        raise BenchError(f"corpus needs {len(contexts)} presentation contexts; one association allows 128")
    manifest = None
    mpath = os.path.join(root, "manifest.json")
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest = json.load(f)
    return Corpus(os.path.abspath(root), files, sorted(contexts), manifest)


def storescu_config_text(corpus: Corpus) -> str:
    """DCMTK association profile: one presentation context per (SOP class,
    transfer syntax) pair found in the corpus, each with that single syntax.

    storescu then sends every file in its own transfer syntax: it looks for an
    accepted context with the file's SOP class and syntax first. (With -R and
    the built-in -x options, storescu 3.6.7 only proposes the uncompressed
    syntaxes plus one chosen compressed one, and converts or fails the rest.)
    """
    syntaxes = sorted({ts for _, ts in corpus.contexts})
    ts_key = {ts: f"TS{i + 1}" for i, ts in enumerate(syntaxes)}
    lines = ["# generated by bench/ingest.py", "[[TransferSyntaxes]]"]
    for ts in syntaxes:
        lines += [f"[{ts_key[ts]}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[BenchContexts]"]
    for i, (sop, ts) in enumerate(corpus.contexts, start=1):
        lines.append(f"PresentationContext{i} = {sop}\\{ts_key[ts]}")
    lines += ["[[Profiles]]", f"[{STORESCU_PROFILE}]", "PresentationContexts = BenchContexts", ""]
    return "\n".join(lines)


def write_storescu_config(corpus: Corpus, path: str) -> str:
    with open(path, "w") as f:
        f.write(storescu_config_text(corpus))
    return path


def warm_page_cache(corpus: Corpus) -> None:
    """Read every file once so each run reads the corpus from the page cache."""
    for path, _ in corpus.files:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


@dataclass
class Shard:
    dir: str
    names: list[str]  # link names inside dir, in corpus order
    bytes: int


def make_shards(corpus: Corpus, n: int, dest: str) -> list[Shard]:
    """Contiguous split into n parts of about equal bytes and file counts,
    as dirs of links.

    Hard links when on the same filesystem, otherwise symlinks. Short link
    names keep the storescu command line small; files keep corpus order
    (patient / study / series / instance).
    """
    # Weight of a file = its share of the corpus bytes + its share of the
    # file count, so shards are balanced on both (ingest cost has a per-byte
    # and a per-instance part). A file goes to the shard its weight midpoint
    # falls in.
    total_b, total_n = corpus.bytes or 1, corpus.count
    shards: list[list[tuple[str, int]]] = [[] for _ in range(n)]
    acc = 0.0
    for path, size in corpus.files:
        w = size / total_b + 1 / total_n
        idx = min(n - 1, int((acc + w / 2) * n / 2))
        shards[idx].append((path, size))
        acc += w
    # never leave a shard empty if there are enough files (tiny corpora)
    for i in range(n):
        if not shards[i]:
            donor = max(range(n), key=lambda j: len(shards[j]))
            if len(shards[donor]) > 1:
                shards[i].append(shards[donor].pop())
    out = []
    for i, files in enumerate(shards):
        if not files:
            continue
        d = os.path.join(dest, f"shard{i:02d}")
        os.makedirs(d)
        names = []
        for k, (path, _) in enumerate(files):
            name = f"{k:06d}.dcm"
            try:
                os.link(path, os.path.join(d, name))
            except OSError:
                os.symlink(path, os.path.join(d, name))
            names.append(name)
        out.append(Shard(d, names, sum(s for _, s in files)))
    return out


# ------------------------------------------------------------------- servers

@dataclass
class Server:
    name: str
    aet: str
    cmd: list[str]
    data_dir: str
    dicom_port: int
    http_port: int
    log_path: str
    config_text: str | None = None
    proc: subprocess.Popen | None = None
    _log_fh: object = None

    def start(self) -> None:
        self._log_fh = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log_fh, stderr=subprocess.STDOUT, env=CHILD_ENV,
            stdin=subprocess.DEVNULL, cwd=os.path.dirname(self.data_dir),
            start_new_session=True,  # own process group: Ctrl-C goes to us only
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within {timeout:.0f}s after SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait(10)
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None
        return self.proc.returncode


def tessera_server(args, run_dir: str, extra: list[str]) -> Server:
    data = os.path.join(run_dir, "data")
    os.makedirs(data)
    dp, hp = free_port(), free_port()
    cmd = [args.tessera_run_bin, "serve", "--data-dir", data,
           "--dicom-bind", f"{HOST}:{dp}", "--http-bind", f"{HOST}:{hp}"] + extra
    return Server("Tessera", args.tessera_aet, cmd, data, dp, hp,
                  os.path.join(run_dir, "tessera.log"))


def orthanc_server(args, run_dir: str) -> Server:
    data = os.path.join(run_dir, "data")
    os.makedirs(data)
    dp, hp = free_port(), free_port()
    # Only what must differ from Orthanc's built-in defaults. Everything that
    # matters for ingest stays default: SQLite index, SyncStorageArea=true
    # (fsync of each stored file, default since 1.7.4), StorageCompression=
    # false, StoreMD5ForAttachments=true, OverwriteInstances=false,
    # DicomThreadsCount=4, no ingest transcoding, no plugins.
    config = {
        "Name": "bench-orthanc",
        "StorageDirectory": os.path.join(data, "storage"),
        "IndexDirectory": os.path.join(data, "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dp,
        "HttpPort": hp,
        "RemoteAccessAllowed": False,   # default; REST only from localhost
        "AuthenticationEnabled": False,  # lets the script read /statistics
        "Plugins": [],
    }
    text = json.dumps(config, indent=2)
    cfg_path = os.path.join(run_dir, "orthanc.json")
    with open(cfg_path, "w") as f:
        f.write(text)
    cmd = [args.orthanc_bin, cfg_path]
    return Server("Orthanc", "ORTHANC", cmd, data, dp, hp,
                  os.path.join(run_dir, "orthanc.log"), config_text=text)


def echo_cmd(args, srv: Server, timeout: int = 2) -> list[str]:
    return [args.echoscu, "-aet", CALLING_AET, "-aec", srv.aet,
            "-to", str(timeout), "-ta", str(timeout), "-td", str(timeout),
            HOST, str(srv.dicom_port)]


def wait_ready(args, srv: Server) -> float:
    """Poll with C-ECHO until success; bounded by --startup-timeout."""
    t0 = time.monotonic()
    deadline = t0 + args.startup_timeout
    attempts = 0
    while time.monotonic() < deadline:
        if not srv.alive():
            raise BenchError(f"{srv.name} exited with code {srv.proc.returncode} during startup; "
                             f"log {srv.log_path}:\n{tail(srv.log_path)}")
        attempts += 1
        try:
            r = subprocess.run(echo_cmd(args, srv), capture_output=True, timeout=10, env=CHILD_ENV)
            if r.returncode == 0:
                return time.monotonic() - t0
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.2)
    raise BenchError(f"{srv.name} did not answer C-ECHO on {HOST}:{srv.dicom_port} (AET {srv.aet}) "
                     f"within {args.startup_timeout}s ({attempts} attempts); log {srv.log_path}:\n"
                     f"{tail(srv.log_path)}")


# --------------------------------------------------------------------- sends

ARG_BUDGET = min(os.sysconf("SC_ARG_MAX") // 2, 1 << 20)


def dcmsend_cmd(args, srv: Server, shard: Shard) -> tuple[list[str], str]:
    """dcmsend command for one shard (run with cwd = shard dir).

    dcmsend proposes one presentation context per (SOP class, transfer
    syntax) of its input files by itself, so each file goes in its own
    syntax; -dn never decompresses (nothing is converted); +cl L is the
    level for re-deflating Deflated files, as for storescu; -nh keeps going
    after a failed store; -v logs one "Received C-STORE Response (...)" line
    per file. All files go over ONE association (<= 128 contexts).
    """
    base = [args.dcmsend, "-v", "-aet", CALLING_AET, "-aec", srv.aet, "-dn",
            "+cl", str(args.deflate_level), "-nh", "-to", "10", "-ta", "30", "-td", "120",
            HOST, str(srv.dicom_port)]
    if sum(len(x) + 1 for x in shard.names) < ARG_BUDGET:
        files = shard.names
        short = (shlex.join(base) + f" {files[0]} ... {files[-1]}"
                 f"   # cwd {shard.dir}, {len(files)} files")
    else:
        files = ["+sd", "."]
        short = shlex.join(base + files) + f"   # cwd {shard.dir}, {len(shard.names)} files"
    return base + files, short


def sender_cmd(args, srv: Server, shard: Shard, cfg: str) -> tuple[list[str], str]:
    if args.client == "dcmsend":
        return dcmsend_cmd(args, srv, shard)
    return storescu_cmd(args, srv, shard, cfg)


def storescu_cmd(args, srv: Server, shard: Shard, cfg: str) -> tuple[list[str], str]:
    """storescu command for one shard (run with cwd = shard dir).

    -xf CFG Bench  propose one presentation context per (SOP class, transfer
                   syntax) of the corpus, so each file goes in its own syntax;
    +cl L          deflate level for files in Deflated Explicit VR LE: storescu
                   inflates them on reading and deflates again on sending;
                   level 6 (its default) costs ~8 s of client CPU per 1000
                   instances of the default corpus on this box, level 1 ~3 s;
    -nh            do not stop at the first failed store (we count failures);
    -v             one "Received Store Response (...)" line per file;
    files          all files of the shard, in corpus order, over ONE
                   association (storescu opens a single association for all
                   its inputs as long as <= 128 presentation contexts).
    Returns (argv, short form for the report).
    """
    base = [args.storescu, "-v", "-aet", CALLING_AET, "-aec", srv.aet,
            "-xf", cfg, STORESCU_PROFILE, "+cl", str(args.deflate_level), "-nh", "-to", "10", "-ta", "30", "-ts", "120",
            HOST, str(srv.dicom_port)]
    if sum(len(x) + 1 for x in shard.names) < ARG_BUDGET:
        files = shard.names
        short = (shlex.join(base) + f" {files[0]} ... {files[-1]}"
                 f"   # cwd {shard.dir}, {len(files)} files")
    else:  # huge shard: let storescu scan the directory (order is then readdir's)
        files = ["+sd", "."]
        short = shlex.join(base + files) + f"   # cwd {shard.dir}, {len(shard.names)} files"
    return base + files, short


@dataclass
class SendResult:
    files: int
    success: int = 0
    warning: int = 0
    failed_responses: int = 0
    converted: int = 0
    returncode: int | None = None
    errors: list[str] = field(default_factory=list)


def parse_storescu_log(path: str, expected: int, rc: int | None) -> SendResult:
    res = SendResult(files=expected, returncode=rc)
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip()
            marker = next((m for m in ("Received Store Response", "Received C-STORE Response")
                           if m in line), None)
            if marker:
                status = line.split(marker, 1)[1].strip()
                if status.startswith("(Success"):
                    res.success += 1
                elif status.startswith("(Warning"):
                    res.warning += 1
                else:
                    res.failed_responses += 1
                    if len(res.errors) < 5:
                        res.errors.append(line)
            elif "Converting transfer syntax:" in line:
                frm, _, to = line.split("Converting transfer syntax:", 1)[1].partition("->")
                if frm.strip() != to.strip():
                    res.converted += 1
            elif ("E: " in line or "F: " in line) and len(res.errors) < 5:
                res.errors.append(line.removeprefix("XMIT: ").lstrip(". "))
    return res


@dataclass
class RunResult:
    target: str
    assocs: int
    repeat: int
    instances: int
    bytes: int
    wall_s: float = 0.0
    ok: int = 0
    warnings: int = 0
    failures: int = 0
    converted: int = 0
    startup_s: float = 0.0
    hwm_kib: int = 0
    rss_end_kib: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    stored_bytes: int = 0
    other_cpu_s: float = 0.0  # CPU used by processes other than server and senders
    steal_s: float = 0.0
    busy_before: float = 0.0  # machine CPU busy fraction just before the send
    server_count: int | None = None
    errors: list[str] = field(default_factory=list)
    server_cmd: str = ""
    storescu_cmds: list[str] = field(default_factory=list)
    config_text: str | None = None

    @property
    def inst_per_s(self) -> float:
        return self.instances / self.wall_s if self.wall_s else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s if self.wall_s else 0.0


def tessera_instance_count(args, data_dir: str) -> int | None:
    """`tessera stats` on the stopped server's data dir; None if unavailable."""
    try:
        r = subprocess.run([args.tessera_run_bin, "stats", "--data-dir", data_dir],
                           capture_output=True, text=True, timeout=120, env=CHILD_ENV,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"could not run tessera stats: {e}")
        return None
    for line in r.stdout.splitlines():
        key, _, val = line.partition(":")
        if key.strip().lower() == "instances":
            try:
                return int(val.split()[0])
            except (ValueError, IndexError):
                break
    log(f"tessera stats gave no instance count (exit {r.returncode}): {r.stdout[-300:]} {r.stderr[-300:]}")
    return None


def orthanc_instance_count(srv: Server) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{srv.http_port}/statistics", timeout=10) as r:
            return int(json.load(r)["CountInstances"])
    except Exception as e:  # noqa: BLE001 - informational only
        log(f"could not read Orthanc /statistics: {e}")
        return None


def run_once(args, corpus: Corpus, target: str, n: int, rep: int, base: str,
             tessera_extra: list[str]) -> RunResult:
    run_dir = tempfile.mkdtemp(prefix=f"{target}-a{n}-r{rep}-", dir=base)
    shards = make_shards(corpus, n, os.path.join(run_dir, "shards"))
    cfg = write_storescu_config(corpus, os.path.join(run_dir, "storescu.cfg"))
    srv = (tessera_server(args, run_dir, tessera_extra) if target == "tessera"
           else orthanc_server(args, run_dir))
    res = RunResult(srv.name, len(shards), rep, corpus.count, corpus.bytes,
                    server_cmd=shlex.join([args.tessera_bin if c == getattr(args, "tessera_run_bin", None)
                                           else c for c in srv.cmd]),
                    config_text=srv.config_text)
    senders: list[tuple[subprocess.Popen, str, int]] = []
    ok = False
    try:
        os.sync()  # flush earlier runs' dirty pages so they don't land in this run
        srv.start()
        res.startup_s = wait_ready(args, srv)
        log(f"{srv.name} ready after {res.startup_s:.2f}s (pid {srv.proc.pid}, "
            f"DICOM {HOST}:{srv.dicom_port}); sending {corpus.count} files over {len(shards)} association(s)")

        res.busy_before = machine_busy(srv.proc.pid, 0.5)
        if res.busy_before > 0.2:
            log(f"WARNING: {100 * res.busy_before:.0f}% of the CPUs are busy with other work right "
                "before the send; results will be noisy")
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0 = proc_cpu_seconds(srv.proc.pid)
        sys0 = system_cpu()
        t0 = time.perf_counter()
        for i, shard in enumerate(shards):
            cmd, short = sender_cmd(args, srv, shard, cfg)
            res.storescu_cmds.append(short)
            lpath = os.path.join(run_dir, f"storescu{i:02d}.log")
            with open(lpath, "wb") as lf:
                p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, cwd=shard.dir, env=CHILD_ENV,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
            senders.append((p, lpath, len(shard.names)))
        deadline = time.monotonic() + args.send_timeout
        for p, lpath, _ in senders:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError(f"storescu did not finish within --send-timeout {args.send_timeout}s "
                                 f"({target}, {n} assocs); last log lines:\n{tail(lpath)}")
        res.wall_s = time.perf_counter() - t0
        sys1 = system_cpu()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        res.client_cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        res.steal_s = sys1[1] - sys0[1]

        if not srv.alive():
            res.errors.append(f"{srv.name} exited during the run (code {srv.proc.returncode}); "
                              f"log tail:\n{tail(srv.log_path)}")
        else:
            st = proc_status(srv.proc.pid)
            res.hwm_kib, res.rss_end_kib = st.get("VmHWM", 0), st.get("VmRSS", 0)
            res.server_cpu_s = proc_cpu_seconds(srv.proc.pid) - cpu0
            # whole-machine busy CPU minus ours (ours also counts this
            # script's few ms); kernel work on our behalf (e.g. writeback
            # threads, softirq) lands here too, so small values are normal
            res.other_cpu_s = max(0.0, (sys1[0] - sys0[0]) - res.server_cpu_s - res.client_cpu_s)
            if target == "orthanc":
                res.server_count = orthanc_instance_count(srv)

        for p, lpath, nfiles in senders:
            sr = parse_storescu_log(lpath, nfiles, p.returncode)
            res.ok += sr.success
            res.warnings += sr.warning
            res.converted += sr.converted
            missing = nfiles - sr.success - sr.warning
            res.failures += max(missing, 0)
            if missing or sr.returncode != 0:
                res.errors.append(f"{os.path.basename(lpath)}: {nfiles} files, {sr.success} success, "
                                  f"{sr.warning} warning, {sr.failed_responses} failure responses, "
                                  f"exit code {sr.returncode}")
                res.errors += ["  " + e for e in sr.errors]
        if target == "tessera":
            srv.stop()  # `tessera stats` reads the data dir of the stopped server
            res.server_count = tessera_instance_count(args, srv.data_dir)
        stored = res.ok + res.warnings
        if res.server_count is not None and res.server_count != stored:
            res.errors.append(f"{srv.name} holds {res.server_count} instances after the run, "
                              f"but {stored} stores succeeded")
        ok = not res.errors
    except KeyboardInterrupt:
        ok = True  # interrupted by the user: nothing to inspect, clean up
        raise
    finally:
        for p, _, _ in senders:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        srv.stop()
        res.stored_bytes = dir_bytes(srv.data_dir)
        if args.keep or not ok:
            # failed runs keep their logs (and data) for inspection
            args.kept_dirs.append(run_dir)
            log(f"kept {run_dir}" + ("" if ok else " (failed run: logs and data left for inspection)"))
        # Otherwise the run's data goes with the work folder at the end, not
        # now: ext4 passes over inodes freed in the last seconds when it
        # allocates new ones, which would charge the next run's server for
        # this run's deletion.
    return res


# ------------------------------------------------------------------- report

def fmt(v: float | int | None, digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def median_run(runs: list[RunResult]) -> RunResult:
    """The run with the median wall time (lower median for even counts)."""
    s = sorted(runs, key=lambda r: r.wall_s)
    return s[(len(s) - 1) // 2]


def render(args, corpus: Corpus, results: list[RunResult], env: dict) -> str:
    targets = [t for t in ("Tessera", "Orthanc") if any(r.target == t for r in results)]
    assocs = sorted({r.assocs for r in results})
    med = {}
    for t in targets:
        for n in assocs:
            runs = [r for r in results if r.target == t and r.assocs == n]
            if runs:
                med[(t, n)] = (median_run(runs), runs)

    L = []
    L.append(f"# Tessera vs Orthanc: C-STORE ingest ({env['date']})")
    L.append("")
    L.append(f"Corpus: `{corpus.root}`: **{corpus.count} instances, {corpus.bytes / 1e6:.1f} MB**"
             + (f" ({corpus.manifest.get('patients')} patients, {corpus.manifest.get('studies')} studies, "
                f"{corpus.manifest.get('series')} series; by modality {corpus.manifest.get('by_modality')}; "
                f"by transfer syntax {corpus.manifest.get('by_transfer_syntax')})" if corpus.manifest else ""))
    L.append("")
    L.append("Network: loopback (127.0.0.1). "
             + (f"All child processes run with `TCP_NODELAY={env['nodelay']}` in their environment "
                "(Debian's DCMTK, used by storescu and Orthanc, keeps Nagle's algorithm on without it)."
                if env["nodelay"] else
                "`TCP_NODELAY` is not set (--dcmtk-nagle): storescu and Orthanc run with Nagle's algorithm on, "
                "as Debian's DCMTK does by default."))
    L.append("")
    L.append(f"Machine: {env['cpus']} CPUs ({env['cpu']}), {env['mem']}, kernel {env['kernel']}; "
             f"server data on {env['fs']}; write 512 KiB + fdatasync + dir fsync there: "
             f"{env['fsync_ms']:.1f} ms median. Servers and storescu share the same CPUs.")
    L.append("")
    if env.get("debug_build"):
        L.append("**Warning: the Tessera binary is a debug build (`target/debug`); build with "
                 "`cargo build --release` and pass `target/release/tessera` for numbers to quote.**")
        L.append("")
    if args.repeat > 1:
        L.append(f"Each cell is the run with the median wall time of {args.repeat} repeats "
                 "(all runs are listed further down).")
        L.append("")

    # side by side
    cols = targets + (["Tessera/Orthanc"] if len(targets) == 2 else [])
    L.append("| assocs | metric | " + " | ".join(cols) + " |")
    L.append("|---|---|" + "---:|" * len(cols))
    metrics = [
        ("instances/s", lambda r: r.inst_per_s, 1, True),
        ("MB/s (corpus bytes / wall)", lambda r: r.mb_per_s, 1, True),
        ("wall time s", lambda r: r.wall_s, 2, True),
        ("stored OK (success+warning) / sent", None, 0, False),
        ("peak RSS MiB (VmHWM)", lambda r: r.hwm_kib / 1024 if r.hwm_kib else None, 1, True),
        ("server CPU s", lambda r: r.server_cpu_s, 1, True),
        ("server CPU ms / instance", lambda r: 1000 * r.server_cpu_s / r.instances if r.server_cpu_s else None, 2, True),
        ("sender CPU s (all senders)", lambda r: r.client_cpu_s, 1, False),
        ("data dir MB after run", lambda r: r.stored_bytes / 1e6, 1, True),
    ]
    for n in assocs:
        for name, fn, digits, with_ratio in metrics:
            cells = []
            vals = []
            for t in targets:
                if (t, n) not in med:
                    cells.append("n/a")
                    vals.append(None)
                    continue
                r = med[(t, n)][0]
                if fn is None:
                    cells.append(f"{r.ok + r.warnings}/{r.instances}"
                                 + (f" (**{r.failures} failed**)" if r.failures else ""))
                    vals.append(None)
                else:
                    v = fn(r)
                    cells.append(fmt(v, digits))
                    vals.append(v)
            if len(targets) == 2:
                cells.append(ratio(vals[0], vals[1]) if with_ratio else "")
            L.append(f"| {n} | {name} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Ratios are Tessera divided by Orthanc: above 1 is better for Tessera on instances/s and MB/s, "
             "worse on time, memory and CPU.")
    L.append("")

    # all runs
    L.append("## All runs")
    L.append("")
    L.append("| target | assocs | repeat | wall s | inst/s | MB/s | ok | warn | failed | converted TS | "
             "startup s | VmHWM MiB | RSS at end MiB | server CPU s | storescu CPU s | other CPU s | "
             "steal s | busy before | server count |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        L.append(f"| {r.target} | {r.assocs} | {r.repeat} | {r.wall_s:.2f} | {r.inst_per_s:.1f} | "
                 f"{r.mb_per_s:.1f} | {r.ok} | {r.warnings} | {r.failures} | {r.converted} | "
                 f"{r.startup_s:.2f} | {r.hwm_kib / 1024:.1f} | {r.rss_end_kib / 1024:.1f} | "
                 f"{r.server_cpu_s:.1f} | {r.client_cpu_s:.1f} | {r.other_cpu_s:.1f} | {r.steal_s:.1f} | "
                 f"{100 * r.busy_before:.0f}% | {fmt(r.server_count)} |")
    L.append("")
    L.append("`server count` is the number of instances the server holds after the run: Orthanc's "
             "CountInstances from `/statistics`, Tessera's `tessera stats --data-dir D` after stopping it. "
             "`converted TS` counts files storescu had to convert "
             "because no presentation context with the file's own transfer syntax was accepted. "
             "`other CPU s` is the machine's busy CPU time during the send minus the server's and "
             "storescu's (kernel writeback and other processes); `steal s` is time the hypervisor "
             "gave to other guests; `busy before` is the share of all CPUs busy with anything but the "
             "server during the 0.5 s before the send, i.e. other work on the machine.")
    L.append("")
    noisy = [r for r in results if r.other_cpu_s > 0.15 * r.wall_s * (os.cpu_count() or 1)]
    if noisy:
        L.append(f"**Warning: the machine was busy with other work during {len(noisy)} of {len(results)} "
                 "runs (`other CPU s` above 15 % of the machine's CPU time); their figures understate both servers "
                 "and vary between repeats. Re-run on an idle machine for numbers to quote.**")
        L.append("")

    problems = [r for r in results if r.failures or r.errors]
    L.append("## Failures")
    L.append("")
    if not problems:
        L.append("None: every file got a Success (or Warning) C-STORE response.")
    else:
        for r in problems:
            L.append(f"- {r.target}, {r.assocs} assoc(s), repeat {r.repeat}: {r.failures} not stored")
            for e in r.errors[:12]:
                L.append(f"    - `{e.strip()}`" if "\n" not in e else "```\n" + e + "\n```")
    L.append("")

    L.append("## Exact commands")
    L.append("")
    L.append("Benchmark:")
    L.append("")
    L.append("```")
    L.append(env["argv"])
    L.append("```")
    L.append("")
    seen = set()
    for r in results:
        key = (r.target, r.assocs)
        if key in seen:
            continue
        seen.add(key)
        L.append(f"{r.target}, {r.assocs} association(s) (ports and temp paths differ per run):")
        L.append("")
        L.append("```")
        pre = f"TCP_NODELAY={env['nodelay']} " if env["nodelay"] else ""
        L.append(pre + r.server_cmd)
        L.extend(pre + c for c in r.storescu_cmds)
        L.append("```")
        L.append("")
    orth = next((r for r in results if r.config_text), None)
    if orth:
        L.append("Orthanc configuration. Everything else is Orthanc's built-in default: SQLite index; "
                 "SyncStorageArea=true (fdatasync of each stored DICOM file before the C-STORE response); "
                 "the SQLite index in WAL mode with synchronous=NORMAL (commits are not synced one by one, "
                 "only at WAL checkpoints); StorageCompression=false; StoreMD5ForAttachments=true; "
                 "DicomThreadsCount=4; no ingest transcoding; no plugins:")
        L.append("")
        L.append("```json")
        L.append(orth.config_text)
        L.append("```")
        L.append("")
    L.append(f"storescu association profile (`storescu.cfg`, used as `-xf storescu.cfg {STORESCU_PROFILE}`; "
             "one presentation context per SOP class / transfer syntax pair in the corpus):")
    L.append("")
    L.append("```ini")
    L.append(storescu_config_text(corpus).rstrip())
    L.append("```")
    L.append("")
    L.append("Tools: " + "; ".join(f"{k}: {v}" for k, v in env["tools"].items()))
    L.append("")
    return "\n".join(L)


def prepare_run(args, prefix: str) -> tuple[str, dict]:
    """What the Tessera-vs-Orthanc benchmarks do first: children get no
    TESSERA_* settings and TCP_NODELAY=1 (Debian's DCMTK, inside Orthanc,
    keeps Nagle's algorithm on otherwise), SIGTERM/SIGINT become exceptions,
    and a work folder holds a private copy of the tessera binary (a rebuild
    during the run can't swap it). Returns the folder and the machine's
    description for the report; callers add their own tools."""
    for k in [k for k in CHILD_ENV if k.startswith("TESSERA_")]:
        del CHILD_ENV[k]
    CHILD_ENV["TCP_NODELAY"] = "1"
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, _raise_on_sigterm)
    base = tempfile.mkdtemp(prefix=prefix, dir=args.workdir)
    if not args.skip_tessera:
        args.tessera_run_bin = os.path.join(base, "tessera")
        shutil.copy2(args.tessera_bin, args.tessera_run_bin)
    cpu = "?"
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(), "cpu": cpu,
        "mem": f"{int(open('/proc/meminfo').readline().split()[1]) / 1024 / 1024:.0f} GiB RAM",
        "kernel": platform.release(), "fs": fs_type(base),
        "load": " ".join(open("/proc/loadavg").read().split()[:3]),
        "argv": shlex.join([sys.executable, *sys.argv]),
        "tools": {},
        "server_cmds": [],
    }
    return base, env


def commands_footer(env: dict) -> list[str]:
    """A report's closing lines: the exact commands, the Orthanc
    configuration when there is one, and the tool versions."""
    L = ["## Exact commands", "", "```", env["argv"], *env.get("server_cmds", []), "```"]
    if env.get("orthanc_config"):
        L += ["", "Orthanc configuration (everything else at its defaults):", "",
              "```json", env["orthanc_config"], "```"]
    L += ["", "Tools: " + "; ".join(f"{k}: {v}" for k, v in env["tools"].items()), ""]
    return L


# ---------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="C-STORE ingest benchmark, Tessera vs Orthanc.")
    ap.add_argument("--corpus", required=True, help="directory of DICOM files (e.g. from gen_corpus.py)")
    ap.add_argument("--tessera-bin", help="path to the tessera binary (required when tessera is a target)")
    ap.add_argument("--targets", default="tessera,orthanc", help="comma list from tessera,orthanc")
    ap.add_argument("--assocs", default="1,4", help="comma list of parallel association counts (default 1,4)")
    ap.add_argument("--repeat", type=int, default=1, help="fresh-server runs per (target, assocs); median reported")
    ap.add_argument("--out", default="results.md", help="Markdown output file (default results.md)")
    ap.add_argument("--workdir", default=None,
                    help="parent for the temp dirs holding server data (default: $TMPDIR or /tmp); "
                         "must be a local disk")
    ap.add_argument("--keep", action="store_true", help="keep data dirs and logs of each run")
    ap.add_argument("--tessera-aet", default="TESSERA")
    ap.add_argument("--tessera-args", default="", help="extra arguments for 'tessera serve' (shell-quoted)")
    ap.add_argument("--orthanc-bin", default=shutil.which("Orthanc") or "/usr/sbin/Orthanc")
    # Use DCMTK's tools by absolute path: pynetdicom installs its own 'storescu'
    # and 'echoscu' apps that may come first on PATH (e.g. pyenv shims).
    ap.add_argument("--storescu", default="/usr/bin/storescu", help="DCMTK storescu")
    ap.add_argument("--dcmsend", default="/usr/bin/dcmsend", help="DCMTK dcmsend")
    ap.add_argument("--client", choices=("dcmsend", "storescu"), default="dcmsend",
                    help="DCMTK sender: dcmsend (default; what the ingest targets are set with) or storescu")
    ap.add_argument("--echoscu", default="/usr/bin/echoscu", help="DCMTK echoscu")
    ap.add_argument("--dcmtk-nagle", action="store_true",
                    help="do NOT set TCP_NODELAY=1 for the child processes: Debian's DCMTK (storescu, "
                         "Orthanc's DICOM server) then keeps Nagle's algorithm on")
    ap.add_argument("--deflate-level", type=int, default=1, choices=range(0, 10), metavar="0-9",
                    help="zlib level storescu uses to re-deflate Deflated-TS files on the wire "
                         "(default 1: keeps the client's CPU share small; the corpus files use 6)")
    ap.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait for C-ECHO")
    ap.add_argument("--send-timeout", type=float, default=3600.0, help="seconds allowed for one run's sends")
    a = ap.parse_args(argv)

    a.target_list = [t.strip().lower() for t in a.targets.split(",") if t.strip()]
    bad = [t for t in a.target_list if t not in ("tessera", "orthanc")]
    if bad or not a.target_list:
        ap.error(f"--targets: unknown target(s) {bad}; use tessera and/or orthanc")
    try:
        a.assoc_list = [int(x) for x in a.assocs.split(",") if x.strip()]
    except ValueError:
        ap.error("--assocs must be a comma list of integers")
    if not a.assoc_list or any(n < 1 or n > 64 for n in a.assoc_list):
        ap.error("--assocs values must be between 1 and 64")
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")

    def need_exe(path, what):
        if not path or not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error(f"{what} not found or not executable: {path!r}")
    if "tessera" in a.target_list:
        if not a.tessera_bin:
            ap.error("--tessera-bin is required when tessera is a target (or use --targets orthanc)")
        a.tessera_bin = os.path.abspath(a.tessera_bin)
        need_exe(a.tessera_bin, "--tessera-bin")
    if "orthanc" in a.target_list:
        need_exe(a.orthanc_bin, "Orthanc (apt-get install -y orthanc)")
    need_exe(a.storescu, "DCMTK storescu (apt-get install -y dcmtk)")
    need_exe(a.echoscu, "DCMTK echoscu (apt-get install -y dcmtk)")
    if "dcmtk" not in tool_version([a.storescu, "--version"]).lower():
        ap.error(f"{a.storescu} does not look like DCMTK's storescu (pynetdicom's app has other flags)")
    return a


def _raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    for k in [k for k in CHILD_ENV if k.startswith("TESSERA_")]:
        log(f"not passing {k} from the environment to the servers (use --tessera-args)")
        del CHILD_ENV[k]
    if args.dcmtk_nagle:
        CHILD_ENV.pop("TCP_NODELAY", None)
    else:
        CHILD_ENV["TCP_NODELAY"] = "1"
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, _raise_on_sigterm)  # also when started with SIGINT ignored (cmd &)
    signal.signal(signal.SIGHUP, _raise_on_sigterm)

    args.kept_dirs = []
    try:
        corpus = scan_corpus(args.corpus)
    except BenchError as e:
        log(f"ERROR: {e}")
        return 2
    log(f"corpus {corpus.root}: {corpus.count} files, {corpus.bytes / 1e6:.1f} MB")
    warm_page_cache(corpus)

    base = tempfile.mkdtemp(prefix="tessera-ingest-", dir=args.workdir)
    if "tessera" in args.target_list:
        # run a private copy, so a rebuild during the benchmark can't swap binaries between runs
        args.tessera_run_bin = os.path.join(base, "tessera")
        shutil.copy2(args.tessera_bin, args.tessera_run_bin)
    fs = fs_type(base)
    if fs.startswith(("tmpfs", "ramfs", "overlay")):
        log(f"WARNING: {base} is on {fs}; fsync results will not reflect a real disk")

    try:
        mem_kib = int(open("/proc/meminfo").readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem": f"{mem_kib / 1024 / 1024:.0f} GiB RAM",
        "kernel": platform.release(),
        "fs": fs,
        "fsync_ms": (os.sync(), fsync_probe(base))[1],
        "argv": shlex.join([sys.executable, *sys.argv]),
        "nodelay": CHILD_ENV.get("TCP_NODELAY"),
        "tools": {"storescu": tool_version([args.storescu, "--version"]), "dcmsend": tool_version([args.dcmsend, "--version"]), "client": args.client},
    }
    if "orthanc" in args.target_list:
        env["tools"]["Orthanc"] = tool_version([args.orthanc_bin, "--version"])
    if "tessera" in args.target_list:
        st = os.stat(args.tessera_bin)
        env["tools"]["tessera"] = (f"{args.tessera_bin} ({st.st_size / 1e6:.0f} MB, built "
                                   f"{dt.datetime.fromtimestamp(st.st_mtime).strftime('%Y-%m-%d %H:%M')}; "
                                   f"{tool_version([args.tessera_bin, '--version'])})")
        env["debug_build"] = f"{os.sep}debug{os.sep}" in args.tessera_bin

    tessera_extra = shlex.split(args.tessera_args)
    results: list[RunResult] = []
    try:
        for n in args.assoc_list:
            for rep in range(1, args.repeat + 1):
                for target in args.target_list:
                    log(f"=== {target}, {n} association(s), repeat {rep}/{args.repeat}")
                    r = run_once(args, corpus, target, n, rep, base, tessera_extra)
                    results.append(r)
                    log(f"{r.target} {r.assocs} assoc: {r.wall_s:.2f}s, {r.inst_per_s:.1f} inst/s, "
                        f"{r.mb_per_s:.1f} MB/s, {r.ok + r.warnings}/{r.instances} stored, "
                        f"VmHWM {r.hwm_kib / 1024:.1f} MiB, server CPU {r.server_cpu_s:.1f}s, "
                        f"storescu CPU {r.client_cpu_s:.1f}s, other CPU {r.other_cpu_s:.1f}s")
                    if r.failures or r.errors:
                        log(f"{r.target}: {r.failures} failures:\n" + "\n".join(r.errors[:10]))
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    except BenchError as e:
        log(f"ERROR: {e}")
        if results:
            report = render(args, corpus, results, env)
            with open(args.out, "w") as f:
                f.write("**INCOMPLETE: the benchmark stopped with an error:** "
                        + str(e).splitlines()[0] + "\n\n" + report + "\n")
            print(report)
            log(f"wrote partial results to {args.out}")
        return 2
    finally:
        if not args.kept_dirs:
            shutil.rmtree(base, ignore_errors=True)
        else:
            # keep only the kept run dirs (drop the binary copy etc.)
            for name in os.listdir(base):
                path = os.path.join(base, name)
                if path not in args.kept_dirs:
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
            log(f"left {len(args.kept_dirs)} run dir(s) under {base}; delete it when done")

    report = render(args, corpus, results, env)
    with open(args.out, "w") as f:
        f.write(report + "\n")
    print(report)
    log(f"wrote {args.out}")
    return 1 if any(r.failures or r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
