"""zooinfer.cpu reads /proc/cpuinfo once: name, physical cores and the low-precision instruction-set flags."""
import pytest

from zooinfer import cpu

CPUINFO = (("processor", "0"), ("model name", "Test CPU 9000"), ("physical id", "0"), ("core id", "0"),
           ("flags", "fpu sse avx2 avx512f avx512_vnni"), ("processor", "1"), ("physical id", "0"), ("core id", "0"))


@pytest.fixture
def fake_cpuinfo(monkeypatch):
    def use(lines):
        monkeypatch.setattr(cpu, "_cpuinfo", lambda: lines)
    return use


def test_flags_name_and_cores_come_from_cpuinfo(fake_cpuinfo, monkeypatch):
    fake_cpuinfo(CPUINFO)
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cpu.cpu_name() == "Test CPU 9000"
    assert cpu.isa_flags() == ("avx512_vnni", "avx512f", "avx2")
    assert cpu.has_int8_dot() and not cpu.has_bf16()
    assert cpu.physical_cores() == 1  # two logical CPUs on one core
    assert cpu.isa_note() == "CPU flags: avx512_vnni avx512f avx2 (Test CPU 9000)"


def test_without_vnni_or_cpuinfo_the_note_says_so(fake_cpuinfo):
    fake_cpuinfo((("model name", "Old CPU"), ("flags", "fpu sse")))
    assert not cpu.has_int8_dot() and cpu.isa_flags() == ()
    assert cpu.isa_note().startswith("CPU flags: none of avx512_vnni")
    fake_cpuinfo(())
    assert not cpu.known() and cpu.isa_note().startswith("CPU flags unknown")
