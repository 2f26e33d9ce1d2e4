"""Device, dtype and CPU precision resolution (``verl_gain.inference``)."""

import pytest
import torch

from verl_gain.inference import (
    BF16,
    FP32,
    InferenceSettingError,
    cpu_bf16_instructions,
    resolve_cpu_precision,
    resolve_dtype,
)

# /proc/cpuinfo excerpts (one processor each) of CPUs with and without bf16 instructions.
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
SKYLAKE_SP = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512_vnni\n"
NEOVERSE_V1 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"
NEOVERSE_N1 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def cpuinfo(tmp_path, text: str):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        (SAPPHIRE_RAPIDS, ("amx_bf16", "avx512_bf16")),
        (ZEN4, ("avx512_bf16",)),
        (SKYLAKE_SP, ()),
        (NEOVERSE_V1, ("bf16",)),
        (NEOVERSE_N1, ()),
    ],
    ids=["sapphire-rapids", "zen4", "skylake-sp", "neoverse-v1", "neoverse-n1"],
)
def test_bf16_instructions_are_read_from_the_cpu_flags(tmp_path, text, expected):
    assert cpu_bf16_instructions(cpuinfo(tmp_path, text)) == expected


def test_a_cpu_without_cpuinfo_counts_as_without_bf16(tmp_path):
    assert cpu_bf16_instructions(tmp_path / "missing") == ()
    assert resolve_cpu_precision("auto", cpuinfo_path=tmp_path / "missing").precision == FP32


@pytest.mark.parametrize("text, expected", [(ZEN4, BF16), (SAPPHIRE_RAPIDS, BF16), (SKYLAKE_SP, FP32)])
def test_auto_picks_bf16_only_where_the_cpu_has_it(tmp_path, text, expected):
    choice = resolve_cpu_precision("auto", cpuinfo_path=cpuinfo(tmp_path, text))
    assert choice.precision == expected and choice.warning is None
    assert choice.dtype == {BF16: torch.bfloat16, FP32: torch.float32}[expected]


@pytest.mark.parametrize("name, expected", [("fp32", FP32), ("float32", FP32), ("bf16", BF16), ("BFloat16", BF16)])
def test_named_precisions_and_aliases(tmp_path, name, expected):
    assert resolve_cpu_precision(name, cpuinfo_path=cpuinfo(tmp_path, ZEN4)).precision == expected


def test_fp32_is_always_available(tmp_path):
    for text in (ZEN4, SKYLAKE_SP, NEOVERSE_N1):
        choice = resolve_cpu_precision("fp32", cpuinfo_path=cpuinfo(tmp_path, text))
        assert choice.precision == FP32 and choice.warning is None


def test_bf16_on_a_cpu_without_it_runs_with_a_one_line_warning_that_says_the_cost(tmp_path):
    choice = resolve_cpu_precision("bf16", setting="cpu.precision", cpuinfo_path=cpuinfo(tmp_path, SKYLAKE_SP))
    assert choice.precision == BF16
    assert "\n" not in choice.warning
    assert "slower than fp32" in choice.warning and "cpu.precision=fp32" in choice.warning


@pytest.mark.parametrize("name", ["fp16", "int8", "", "bfloat"])
def test_an_unknown_precision_is_refused_in_one_line_listing_the_valid_ones(name):
    with pytest.raises(InferenceSettingError, match="cpu.precision must be one of auto, bf16, fp32") as error:
        resolve_cpu_precision(name, setting="cpu.precision")
    assert "\n" not in str(error.value)


def test_auto_dtype_on_this_cpu_follows_its_flags():
    expected = torch.bfloat16 if cpu_bf16_instructions() else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    with pytest.raises(InferenceSettingError, match="dtype must be auto or one of"):
        resolve_dtype("fp8", torch.device("cpu"))
