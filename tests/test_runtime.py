"""segfew.runtime: device resolution, the precision policy, seeds, and what run.json records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from segfew.errors import SpecError
from segfew.runtime import (
    Capabilities,
    adam,
    choose_plan,
    cpu_bf16_supported,
    derive_seed,
    describe,
    idle_cores,
    resolve_device,
    resolve_plan,
    set_threads,
    threads_chosen_by,
)

BF16_CPU = Capabilities("cpu", bf16=True, fp16=False)
AVX2_CPU = Capabilities("cpu", bf16=False, fp16=False)
AMPERE = Capabilities("cuda", bf16=True, fp16=True)
VOLTA = Capabilities("cuda", bf16=False, fp16=True)


def test_resolve_device() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(SpecError, match="unknown device"):
        resolve_device("abacus")
    with pytest.raises(SpecError, match="not supported"):
        resolve_device("meta")


@pytest.mark.parametrize(("caps", "precision", "scaler"), [
    (BF16_CPU, "bf16", False),  # native bf16 kernels: bf16 autocast
    (AVX2_CPU, "fp32", False),  # emulated bf16 is many times slower than fp32
    (AMPERE, "bf16", False),
    (VOLTA, "fp16", True),      # fp16 needs a GradScaler
])
def test_auto_picks_the_fastest_safe_precision(caps: Capabilities, precision: str,
                                               scaler: bool) -> None:
    plan = choose_plan("auto", caps)
    assert (plan.precision, plan.grad_scaler, plan.device_type) == (
        precision, scaler, caps.device_type)
    assert plan.autocast_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16,
                                   "fp32": None}[precision]


def test_channels_last_where_it_pays_and_overrides() -> None:
    assert choose_plan("auto", BF16_CPU).channels_last
    assert choose_plan("auto", AVX2_CPU).channels_last  # fp32 3x3 convs gain on CPUs too
    assert choose_plan("auto", AMPERE).channels_last
    assert not choose_plan("fp32", AMPERE).channels_last
    assert not choose_plan("auto", BF16_CPU, channels_last=False).channels_last
    assert choose_plan("fp32", AMPERE, channels_last=True).channels_last


def test_explicit_precisions_override_and_bad_ones_are_refused() -> None:
    assert choose_plan("fp32", BF16_CPU).precision == "fp32"
    assert choose_plan("bf16", BF16_CPU).precision == "bf16"
    assert choose_plan("bf16", VOLTA).precision == "bf16"  # CUDA emulates no bf16 kernels
    assert choose_plan("fp16", AMPERE).grad_scaler
    with pytest.raises(SpecError, match="fp16 runs on CUDA only"):
        choose_plan("fp16", BF16_CPU)
    with pytest.raises(SpecError, match="unknown precision 'fp8'"):
        choose_plan("fp8", BF16_CPU)


def test_bf16_asked_for_on_a_cpu_without_it_is_refused_saying_why() -> None:
    with pytest.raises(SpecError) as err:
        choose_plan("bf16", AVX2_CPU)
    text = str(err.value)
    assert "\n" not in text and "native bf16" in text
    assert "slower than fp32" in text and "memory estimate" in text and "fp32" in text


@pytest.fixture
def onednn_says_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ISA limit in the environment, and oneDNN's own check saying yes."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)


@pytest.mark.usefixtures("onednn_says_bf16")
@pytest.mark.parametrize(("limit", "native"), [
    ("AVX2", False), ("avx512_core", False), ("AVX512_CORE_VNNI", False), ("", None),
    ("AVX512_CORE_BF16", None), ("ALL", None)])
@pytest.mark.parametrize("variable", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_a_user_limit_below_avx512_bf16_makes_bf16_emulated(
        limit: str, native: bool | None, variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities",
                        lambda: {"architecture": "x86_64", "avx512_bf16": True})
    monkeypatch.setenv(variable, limit)
    assert cpu_bf16_supported() is (native if native is not None else
                                     torch.backends.mkldnn.is_available())


@pytest.mark.parametrize(("capabilities", "native"), [
    ({"architecture": "x86_64", "avx512_f": True, "avx512_bf16": False}, False),
    ({"architecture": "x86_64", "avx2": True}, False),
    ({"architecture": "x86_64", "avx512_bf16": True}, True),
    ({"architecture": "x86_64", "amx_bf16": True}, True),
    ({"architecture": "aarch64"}, True)])
@pytest.mark.usefixtures("onednn_says_bf16")
def test_bf16_is_native_only_with_its_instructions(
        capabilities: dict, native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN's check says yes on any AVX-512 CPU, where bf16 is converted, not computed:
    only AVX-512 BF16 or AMX counts on x86 (elsewhere oneDNN's check is trusted)."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert cpu_bf16_supported() is (native and torch.backends.mkldnn.is_available())


def test_plan_autocasts_and_formats_as_it_says() -> None:
    plan = choose_plan("bf16", BF16_CPU, channels_last=True)
    x = torch.randn(2, 3, 8, 8)
    assert plan.memory_format(x).is_contiguous(memory_format=torch.channels_last)
    assert plan.memory_format(torch.randn(2, 3, 4, 4, 4)).is_contiguous(
        memory_format=torch.channels_last_3d)
    with plan.autocast():
        y = torch.nn.functional.linear(x.flatten(1), torch.randn(4, 192))
    assert y.dtype == torch.bfloat16
    with choose_plan("fp32", BF16_CPU).autocast():
        assert torch.nn.functional.linear(x.flatten(1), torch.randn(4, 192)).dtype == torch.float32


@pytest.mark.cpu_dependent
def test_this_machine_plan_follows_its_capability() -> None:
    plan = resolve_plan(torch.device("cpu"))
    assert plan.precision == ("bf16" if cpu_bf16_supported() else "fp32")
    info = describe("cpu")
    assert info["precision"] == plan.precision and info["native_bf16"] == cpu_bf16_supported()
    assert info["requested_precision"] == "auto" and info["threads"] >= 1


def test_derived_seeds_depend_only_on_their_keys() -> None:
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert len({derive_seed(1, e, 3) for e in range(50)}) == 50
    assert 0 <= derive_seed(2**40, -1) < 2**63


def test_channels_last_fits_a_2d_network_inside_a_classifier_of_volumes() -> None:
    """A 2D M-Net run slice by slice on 3D images: each weight takes its own rank's format."""
    from segfew.models import FeatureClassifier, MNet, VGGClassifier

    torch.manual_seed(0)
    plan = choose_plan("fp32", BF16_CPU, channels_last=True)
    clf = FeatureClassifier(MNet(2, 1, 3, n_s=2), 2, 3, (32, 32, 4), n_c=2, n_fc=8, r=2).eval()
    x = torch.randn(2, 2, 32, 32, 4)
    with torch.no_grad():
        expected = clf(x)
        plan.prepare_model(clf)
        got = clf(plan.memory_format(x))
    assert torch.allclose(got, expected, atol=1e-5)
    conv2d = next(p for p in clf.parameters() if p.dim() == 4)
    assert conv2d.is_contiguous(memory_format=torch.channels_last)
    vgg = plan.prepare_model(VGGClassifier(3, 1, 2, (16, 16, 16), n_c=2, n_fc=4))
    conv3d = next(p for p in vgg.parameters() if p.dim() == 5)
    assert conv3d.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("dim", [2, 3])
def test_channels_last_plan_feeds_every_convolution_channels_last(dim: int) -> None:
    """A one-channel image: unless the first weight is restrided too, its convolution returns
    NCHW and every convolution after it copies its input back."""
    from torch import nn

    from segfew.models import MNet

    fmt = torch.channels_last if dim == 2 else torch.channels_last_3d
    plan = choose_plan("fp32", BF16_CPU, channels_last=True)
    net = plan.prepare_model(MNet(dim, 1, 3, n_s=2))
    seen: list[tuple[int, bool]] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append((args[0].shape[1], args[0].is_contiguous(memory_format=fmt)))

    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            m.register_forward_pre_hook(record)
    net(plan.memory_format(torch.randn(2, 1, *([32] * dim)))).sum().backward()
    assert len(seen) == 18
    assert all(cl for channels, cl in seen if channels > 1), seen


def test_fused_adam_updates_as_adam_does() -> None:
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    fused = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    fused.load_state_dict(reference.state_dict())
    start = [p.detach().clone() for p in reference.parameters()]
    optimizers = [torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=1e-3,
                                   foreach=False), adam(fused.parameters(), 1e-2, 1e-3)]
    assert optimizers[1].defaults["fused"]
    x = torch.randn(2, 1, 8, 8)
    for _ in range(3):
        for net, opt in zip((reference, fused), optimizers, strict=True):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b, s in zip(reference.parameters(), fused.parameters(), start, strict=True):
        assert torch.allclose(a, b, atol=1e-4)  # rounding, against moves of about 0.03
        assert not torch.allclose(a, s)  # both moved, by 3 steps of about lr each


@pytest.mark.parametrize(("cores", "load", "idle"), [
    (2, 0.2, 2), (2, 0.6, 1), (2, 2.0, 1), (2, 5.5, 1), (16, 3.4, 13), (4, 0.0, 4)])
def test_idle_cores_leave_the_load_its_cores_and_keep_one(cores: int, load: float,
                                                          idle: int) -> None:
    assert idle_cores(cores, load) == idle


@pytest.fixture
def fresh_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process that has chosen no threads yet, on 4 cores with a load average of 2.2."""
    import segfew.runtime as runtime

    monkeypatch.setattr(runtime, "_AUTO", None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (2.2, 1.0, 0.5))
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("fresh_threads")
def test_the_default_threads_are_the_idle_cores_and_say_so(
        caplog: pytest.LogCaptureFixture) -> None:
    torch.set_num_threads(1)
    with caplog.at_level("INFO", logger="segfew.runtime"):
        assert set_threads(None) == 2 == torch.get_num_threads()
        set_threads(None)  # the same choice again (an experiment's next task): said once
    assert threads_chosen_by() == "idle cores: 4 cores, load average 2.2"
    assert describe("cpu")["threads_chosen_by"] == threads_chosen_by()
    assert caplog.messages == ["CPU threads: 2 (idle cores: 4 cores, load average 2.2)"]


@pytest.mark.usefixtures("fresh_threads")
def test_threads_given_or_from_omp_override_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set_threads(3) == 3 == torch.get_num_threads()
    assert threads_chosen_by() == "--threads"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert set_threads(None) == 1 and threads_chosen_by() == "OMP_NUM_THREADS"
    with pytest.raises(SpecError, match="at least 1"):
        set_threads(0)


@pytest.mark.usefixtures("fresh_threads")
def test_processes_of_one_torchrun_share_the_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 2 idle cores among 4 ranks: one each
    assert set_threads(None) == 1
    assert threads_chosen_by().endswith("shared by 4 processes")
