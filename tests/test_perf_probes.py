"""The USDT probes of the C core, and the README's "Profiling with perf"
recipes, run for real.

The C core carries USDT probes (provider osvrt, perf's sdt_osvrt:*): C probes
(wake, push, drain, kick, idle_enter, idle_exit, net_rx, channel_push,
channel_drop) and the Python scheduler's tracepoints (switch, spawn, exit,
migrate) behind SDT semaphores.  csrc/core/sdt.h writes the probe notes itself, so
every build carries them: the first tests read them from the installed
extension with a small ELF parser (no perf, no binutils) and run everywhere.

The perf tests list the probes, put uprobes on two of them (a C probe, wake,
and a semaphore-guarded one, switch), record a cross-CPU ping-pong and check
with perf script that both fired and that the semaphore was raised; and sample
the same workload with perf record -g and read it with perf report.  They are
skipped, saying why, where perf is missing, tracefs cannot be mounted, or perf
is not permitted to add uprobes or record.  Probes these tests add are deleted
afterwards; a lock file keeps two test runs on one host from deleting each
other's probes.
"""
import contextlib
import fcntl
import os
import re
import shutil
import struct
import subprocess
import sys

import pytest

import osvrt
from osvrt import _core

PERF = shutil.which("perf")
SO = os.path.realpath(_core.__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(osvrt.__file__)))
LOCK = "/tmp/osvrt-perf-probes.lock"
PROBES = ("wake", "switch")          # a C probe and a semaphore-guarded tracepoint
# every probe of csrc, with its number of arguments
ARGC = {"kick": 1, "push": 2, "drain": 2, "idle_enter": 1, "idle_exit": 2, "wake": 2,
        "net_rx": 3, "channel_push": 2, "channel_drop": 2,
        "switch": 3, "spawn": 2, "exit": 2, "migrate": 3}
ALL_PROBES = tuple(ARGC)
# The semaphore-guarded tracepoints and their argument sizes: trace.h's
# signatures, the contract with the Python scheduler (uint32_t -> 4, uint64_t -> 8).
TRACEPOINTS = {"switch": [4, 8, 8], "spawn": [4, 8], "exit": [4, 8], "migrate": [8, 4, 4]}

# A cross-CPU ping-pong that lasts ~0.6 s: osvrt reads the SDT semaphores when
# a worker idles and every stall-watchdog period (50 ms), so the traced run
# must outlast a few of those.
WORKLOAD = """
import time, osvrt

async def pingpong(n):
    ping, pong = osvrt.Event(), osvrt.Event()
    async def a():
        for _ in range(n):
            ping.set(); await pong.wait(); pong.clear()
    async def b():
        for _ in range(n):
            await ping.wait(); ping.clear(); pong.set()
    tb, ta = osvrt.spawn(b, cpu=CPUS[1]), osvrt.spawn(a, cpu=CPUS[0])
    await ta.join(); await tb.join()

async def main():
    from osvrt import _core
    print("switch semaphore", _core.lib.osvrt_switch_semaphore)
    end = time.monotonic() + 0.6
    rounds = 0
    while time.monotonic() < end:
        await pingpong(500)
        await osvrt.sleep(0.005)
        rounds += 1
    return rounds

rt = osvrt.Runtime(cpus=2)
CPUS = rt.cpus
with rt:
    print("rounds", rt.run(main))
"""

def needs_perf(test):
    """Marks a test that runs perf on the 2-CPU workload."""
    test = pytest.mark.skipif(PERF is None,
                              reason="perf is not installed (apt-get install linux-perf)")(test)
    return pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                              reason="the traced workload needs 2 CPUs")(test)


# ---- the probe notes, read from the extension itself -------------------------

EM_X86_64, EM_AARCH64 = 62, 183
NOP = {EM_X86_64: b"\x90", EM_AARCH64: struct.pack("<I", 0xD503201F)}
NT_STAPSDT = 3
# One argument: size (negative when signed) @ operand.  x86-64 operands as GNU
# as prints them: %reg, $imm, disp(%base[,%index,scale]); aarch64: xN/wN/sp,
# [reg], [reg, #imm] (sdt.h asks for registers there; the others are what
# <sys/sdt.h> may emit).
ARG_RE = {
    EM_X86_64: re.compile(r"-?(1|2|4|8)@(%[a-z0-9]+|\$-?\d+|-?\d*\(%[a-z0-9]+(,%[a-z0-9]+,[1248])?\)"
                          r"|[A-Za-z_.][\w.]*(\+\d+)?\(%rip\))"),
    EM_AARCH64: re.compile(r"-?(1|2|4|8)@([xw]\d{1,2}|sp|-?\d+|\[(sp|x\d{1,2})(, ?#?-?\d+)?\])"),
}


class Elf:
    """The sections, dynamic symbols and stapsdt notes of a 64-bit ELF file."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = data = f.read()
        assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
        assert data[4] == 2, f"{path} is not a 64-bit ELF file"
        self.end = "<" if data[5] == 1 else ">"
        (self.machine,) = self._u("H", 18)
        shoff, = self._u("Q", 0x28)
        shentsize, shnum, shstrndx = self._u("HHH", 0x3A)
        raw = [self._u("IIQQQQIIQQ", shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx]
        self.sections = {}
        self.by_index = []
        for (name, type_, flags, addr, off, size, link, _info, _align, entsize) in raw:
            sec = dict(type=type_, flags=flags, addr=addr, off=off, size=size, link=link,
                       entsize=entsize, name=self._cstr(names[4] + name))
            self.sections.setdefault(sec["name"], sec)
            self.by_index.append(sec)

    def _u(self, fmt, off):
        return struct.unpack_from(self.end + fmt, self.data, off)

    def _cstr(self, off):
        return self.data[off:self.data.index(b"\0", off)].decode()

    def symbols(self):
        """Dynamic symbols by name: their link-time addresses."""
        dynsym = self.sections[".dynsym"]
        strtab = self.by_index[dynsym["link"]]
        out = {}
        for off in range(dynsym["off"], dynsym["off"] + dynsym["size"], 24):
            name, _info, _other, _shndx, value, _size = self._u("IBBHQQ", off)
            if name:
                out[self._cstr(strtab["off"] + name)] = value
        return out

    def file_offset(self, addr):
        for sec in self.by_index:
            if sec["type"] != 8 and sec["flags"] & 2 and sec["addr"] <= addr < sec["addr"] + sec["size"]:
                return sec, sec["off"] + addr - sec["addr"]     # 8: SHT_NOBITS, 2: SHF_ALLOC
        return None, None

    def stapsdt(self):
        """[(provider, name, pc, base, semaphore, args)], one per probe site."""
        sec = self.sections.get(".note.stapsdt")
        if sec is None:
            return []
        notes, off, end = [], sec["off"], sec["off"] + sec["size"]
        while off < end:
            namesz, descsz, type_ = self._u("III", off)
            off += 12
            owner = self.data[off:off + namesz].rstrip(b"\0")
            off += (namesz + 3) & ~3
            desc = self.data[off:off + descsz]
            off += (descsz + 3) & ~3
            if owner != b"stapsdt" or type_ != NT_STAPSDT:
                continue
            pc, base, sem = struct.unpack_from(self.end + "QQQ", desc)
            strings = desc[24:].split(b"\0")
            assert len(strings) == 4 and strings[3] == b"", f"malformed note strings {strings}"
            provider, name, args = (s.decode() for s in strings[:3])
            notes.append((provider, name, pc, base, sem, args))
        return notes


@pytest.fixture(scope="module")
def elf():
    e = Elf(SO)
    if e.machine not in NOP:
        pytest.skip(f"csrc/core/sdt.h writes no probes for ELF machine {e.machine} "
                    "(x86-64 and aarch64 only)")
    return e


def test_extension_carries_every_probe_with_wellformed_arguments(elf):
    notes = [n for n in elf.stapsdt() if n[0] == "osvrt"]
    names = {n[1] for n in notes}
    assert names == set(ALL_PROBES), (f"missing {sorted(set(ALL_PROBES) - names)}, "
                                      f"unexpected {sorted(names - set(ALL_PROBES))}")
    text = elf.sections[".text"]
    base = elf.sections[".stapsdt.base"]
    for provider, name, pc, note_base, sem, args in notes:
        where = f"sdt_osvrt:{name} at {pc:#x} ({args!r})"
        ops = args.split()
        assert len(ops) == ARGC[name], where
        bad = [op for op in ops if not ARG_RE[elf.machine].fullmatch(op)]
        assert not bad, f"{where}: malformed operands {bad}"
        # the base the note records is the section's own address: not moved since linking
        assert note_base == base["addr"] and base["size"] >= 1, where
        assert text["addr"] <= pc < text["addr"] + text["size"], f"{where}: pc outside .text"
        _, off = elf.file_offset(pc)
        nop = NOP[elf.machine]
        assert elf.data[off:off + len(nop)] == nop, f"{where}: no nop at the probe site"
        if name in TRACEPOINTS:
            sizes = [int(op.split("@")[0]) for op in ops]
            assert sizes == TRACEPOINTS[name], f"{where}: argument sizes {sizes}"
        else:
            assert sem == 0, f"{where}: a C probe with a semaphore"


def test_tracepoint_semaphores_are_the_ones_python_reads(elf):
    symbols = elf.symbols()
    probes = elf.sections[".probes"]
    for name in TRACEPOINTS:
        sems = {n[4] for n in elf.stapsdt() if n[:2] == ("osvrt", name)}
        sym = symbols[f"osvrt_{name}_semaphore"]
        # the kernel raises the 2-byte word the note names; Python reads the symbol
        assert sems == {sym}, (name, sorted(map(hex, sems)), hex(sym))
        assert probes["addr"] <= sym and sym + 2 <= probes["addr"] + probes["size"], name
        assert getattr(_core.lib, f"osvrt_{name}_semaphore") in range(0, 1 << 16)


def perf(*args, timeout=120, check=False, cwd=None):
    p = subprocess.run([PERF, *args], capture_output=True, text=True, timeout=timeout,
                       env=_env(), cwd=cwd)
    if check and p.returncode != 0:
        pytest.fail(f"perf {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _not_permitted(text):
    return re.search(r"permission|not permitted|paranoid|EACCES|EPERM|Operation not",
                     text, re.I)


def _has_sdt_notes():
    with open(SO, "rb") as f:
        data = f.read()
    return b"stapsdt" in data and b"osvrt" in data


def _tracefs():
    """The uprobe_events file, mounting tracefs if needed; None if impossible."""
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.exists(os.path.join(d, "uprobe_events")):
            return d
    if os.geteuid() == 0 and os.path.isdir("/sys/kernel/tracing"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                       capture_output=True, timeout=10)
        if os.path.exists("/sys/kernel/tracing/uprobe_events"):
            return "/sys/kernel/tracing"
    return None


@pytest.fixture(scope="module")
def sdt():
    if not _has_sdt_notes():
        pytest.skip(f"{SO} has no SDT notes (an architecture csrc/core/sdt.h does not know)")
    if _tracefs() is None:
        pytest.skip("tracefs is not mounted and cannot be mounted here "
                    "(mount -t tracefs nodev /sys/kernel/tracing needs root)")
    return SO


@contextlib.contextmanager
def probes_added(names):
    """Add uprobes sdt_osvrt:<name> on this build's extension; delete the
    ones added here on the way out.  Serialized across processes."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        listed = perf("probe", "-l").stdout
        mine, reuse = [], []
        for name in names:
            lines = [ln for ln in listed.splitlines() if f"sdt_osvrt:{name} " in ln + " "]
            if lines and all(SO in ln for ln in lines):
                reuse.append(name)
            elif lines:
                pytest.skip(f"sdt_osvrt:{name} already exists for another file: "
                            f"{lines[0].strip()} (remove it: perf probe -d sdt_osvrt:{name})")
            else:
                mine.append(name)
        try:
            if mine:
                args = ["probe", "-x", SO]
                for name in mine:
                    args += ["-a", f"sdt_osvrt:{name}"]
                p = perf(*args)
                if p.returncode != 0:
                    added = [n for n in mine if f"sdt_osvrt:{n}" in perf("probe", "-l").stdout]
                    mine = added
                    if _not_permitted(p.stderr):
                        pytest.skip(f"perf may not add uprobes here: {p.stderr.strip()[:300]}")
                    pytest.fail(f"perf probe failed:\n{p.stderr}")
            yield
        finally:
            for name in mine:
                perf("probe", "-d", f"sdt_osvrt:{name}")


def record(tmp_path, *perf_args):
    out = tmp_path / "perf.data"
    p = perf("record", *perf_args, "-o", str(out), "--", sys.executable, "-P", "-c", WORKLOAD,
             cwd=str(tmp_path))
    if p.returncode != 0:
        if _not_permitted(p.stderr):
            pytest.skip(f"perf record is not permitted here: {p.stderr.strip()[:300]}")
        pytest.fail(f"perf record failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    assert "rounds" in p.stdout, p.stdout + p.stderr
    (tmp_path / "stdout").write_text(p.stdout)
    return out


@needs_perf
def test_perf_lists_every_probe(sdt, tmp_path):
    perf("buildid-cache", "--add", SO, check=True)
    listed = perf("list", "sdt_osvrt:*", check=True).stdout
    missing = [n for n in ALL_PROBES if not re.search(rf"sdt_osvrt:{n}[ @]", listed)]
    assert not missing, f"perf list does not show {missing}:\n{listed}"


@needs_perf
def test_c_probe_and_python_tracepoint_fire(sdt, tmp_path):
    with probes_added(PROBES):
        data = record(tmp_path, *[a for n in PROBES for a in ("-e", f"sdt_osvrt:{n}")])
        script = perf("script", "-i", str(data), check=True).stdout
    stdout = (tmp_path / "stdout").read_text()
    # the kernel raised switch's semaphore while perf recorded (as Python reads it)
    assert re.search(r"switch semaphore [1-9]", stdout), stdout
    counts = {n: len(re.findall(rf"sdt_osvrt:{n}:", script)) for n in PROBES}
    assert counts["wake"] > 0, f"the C probe wake never fired:\n{script[:2000]}"
    assert counts["switch"] > 0, ("the semaphore-guarded tracepoint switch never fired "
                                  f"(is the semaphore read?):\n{script[:2000]}")
    # switch(cpu, from_id, to_id): the cpu is a worker index of the 2-CPU runtime
    cpus = {int(m) for m in re.findall(r"sdt_osvrt:switch: \(\w+\) arg1=(\d+)", script)}
    assert cpus and cpus <= {0, 1}, cpus


@needs_perf
def test_sampling_with_call_graphs(tmp_path):
    data = record(tmp_path, "-e", "cpu-clock", "-F", "999", "-g")
    rep = perf("report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym",
               "-g", "caller", check=True).stdout
    assert os.path.basename(SO) in rep or "_core" in rep, rep[:3000]
    assert "libpython" in rep or "python" in rep, rep[:3000]
    # _core's samples are named (its symbols resolve), and a chain runs from the
    # engine (or a cffi wrapper) into the core: the frame walk crosses both
    # extensions' frames
    assert re.search(r"\[\.\] osvrt_\w+", rep), rep[:3000]
    assert re.search(r"(worker_\w+|_cffi_f_\w+)\s*\n\s*(\|\s*)*osvrt_\w+", rep), rep[:6000]
