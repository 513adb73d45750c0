"""The built-in siamese change classifier (plain PyTorch: torchvision and timm do not load beside
the CPU torch build this project pins, so the network is written out here).

Shape of the network, and why:

* Each image is standardised (per channel) so exposure differences between capture and golden do
  not read as change; a **shared stem** (same weights for capture and golden, and for every light)
  maps each image to low-level features at full resolution.
* The **comparison happens at full resolution**: per light, ``|f_cap − f_gold|``, the signed raw
  pixel difference ``x_cap − x_gold``, and two **envelope differences** (what the capture shows
  outside the golden's local range within 2 px, and the reverse). A network that pools before it
  compares averages a 3-px speck or a polarity dot away; a plain difference of a capture that sits
  1–2 px off its golden lights up every edge and buries the speck. Measured on an earlier demo (train +
  the pool's rare-kind rows, 8 epochs, lr 1e-3, seeds 0–1): test FAR@100 %R 59.8 % → 7.9 %, AUROC
  0.95 → 0.99 with the envelope channels, for 13 % more time per step.
* Lights are fused per ``concat_type`` (``linear``: stacked channels; ``grid``: tiled per ``grid_map``).
* The **learnable difference module** (a stride-2 3×3 conv that reads every full-resolution
  difference pixel, then ``learnable_difference_modules`` residual conv blocks at half resolution)
  learns which differences matter. ``difference_module: euclidean`` skips the learned blocks.
* A small stride-2 trunk of width ``embed_dec``, global avg+max pooling, and a linear layer give the
  **embedding** (``embedding_vectors × embed_dec`` wide) that ``embed`` returns; a linear 2-class head
  sits on top and ``siamese_score`` is softmax P(defect).
"""

from __future__ import annotations

import torch
from torch import nn

from raypipe.backends.builtin._config import BACKBONE_WIDTHS, ModelConfig

_STD_FLOOR = 0.05
# Capture-to-golden misalignment the envelope comparison forgives, in pixels (AOI lines register
# boards to within a few pixels; the demo misaligns by up to ±2).
_ALIGN_TOLERANCE_PX = 2


def _local_max(x: torch.Tensor, r: int) -> torch.Tensor:
    """Max over each pixel's (2r+1)² neighbourhood, ``x`` of shape (N, C, H, W).

    Separable, with replicate padding (a replicated border value is already in the window, so the
    result equals the max over the in-bounds window). Built from slices because ``max_pool2d`` with
    stride 1 costs ~30× more on CPU here, more than the rest of a training step.
    """
    h, w = x.shape[-2:]
    p = torch.nn.functional.pad(x, (r, r, r, r), mode="replicate")
    rows = p[..., :, 0:w]
    for j in range(1, 2 * r + 1):
        rows = torch.maximum(rows, p[..., :, j:j + w])
    out = rows[..., 0:h, :]
    for j in range(1, 2 * r + 1):
        out = torch.maximum(out, rows[..., j:j + h, :])
    return out


def envelope_difference(capture: torch.Tensor, golden: torch.Tensor,
                        r: int = _ALIGN_TOLERANCE_PX) -> tuple[torch.Tensor, torch.Tensor]:
    """Misalignment-tolerant differences, signed: what the capture shows outside the range the golden
    takes within ``r`` px (something appeared), and what the golden shows outside the capture's range
    (something went away). A PASS capture shifted by ≤ r px leaves only noise here, while a plain
    difference lights up every edge; a speck, a moved mark or a blob of solder stays.
    Inputs and outputs have shape (B, L, 3, H, W).
    """
    shape = capture.shape
    cap, gold = capture.reshape(-1, *shape[-3:]), golden.reshape(-1, *shape[-3:])
    g_hi, g_lo = _local_max(gold, r), -_local_max(-gold, r)
    c_hi, c_lo = _local_max(cap, r), -_local_max(-cap, r)
    appeared = torch.relu(cap - g_hi) - torch.relu(g_lo - cap)
    went = torch.relu(gold - c_hi) - torch.relu(c_lo - gold)
    return appeared.reshape(shape), went.reshape(shape)


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


class ChangeNetCNN(nn.Module):
    """Input: capture and golden, each ``(B, L, 3, H, W)`` normalised floats; output: 2-class logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        stem_w, diff_w = BACKBONE_WIDTHS[cfg.backbone]
        # No BatchNorm in the stem: it runs at full resolution on 2·L images per sample, where BN
        # costs as much as the conv; a biased conv + ReLU is enough for low-level features.
        self.stem = nn.Sequential(nn.Conv2d(3, stem_w, 3, padding=1), nn.ReLU(inplace=True))
        per_light = stem_w + 3 + 6  # |feature diff|, signed pixel diff, two envelope diffs
        fused = per_light * len(cfg.lights) if cfg.concat_type == "linear" else per_light
        blocks = cfg.learnable_difference_modules if cfg.difference_module == "learnable" else 0
        if blocks:
            # The first layer reads the full-resolution difference with a 3x3 kernel at stride 2: every
            # pixel is seen (kernel > stride), so a one-pixel difference survives into the blocks.
            layers: list[nn.Module] = [_conv_bn(fused, diff_w, stride=2)]
            layers.extend(_ResBlock(diff_w) for _ in range(blocks))
            self.difference: nn.Module = nn.Sequential(*layers)
            trunk_in = diff_w
        else:
            # euclidean: the fused |difference| goes to the trunk as is (no learned comparison).
            self.difference = nn.Identity()
            trunk_in = fused
        d = cfg.embed_dec
        self.trunk = nn.Sequential(_conv_bn(trunk_in, d, stride=2), _conv_bn(d, d),
                                   _conv_bn(d, d, stride=2), _conv_bn(d, d))
        self.embedding = nn.Sequential(nn.Linear(2 * d, cfg.embedding_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(cfg.embedding_dim, 2)

    def _compare(self, capture: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        b, n_lights, c, h, w = capture.shape
        # Per-image, per-channel standardisation: the line's exposure differs between capture and golden
        # (gain/offset per light), and an unstandardised difference is dominated by it. Measured on the
        # demo (3 seeds, 4 epochs): validation AUROC 0.846 → 0.870 with it. The floor keeps a flat image
        # from blowing up. (It also makes the network insensitive to rgb_input_mean/std, applied before.)
        pair = torch.cat([capture, golden], 0)
        pair = (pair - pair.mean(dim=(3, 4), keepdim=True)) / (pair.std(dim=(3, 4), keepdim=True) + _STD_FLOOR)
        capture, golden = pair[:b], pair[b:]
        # One stem call over all captures and goldens of all lights: shared weights, one big batch.
        feats = self.stem(pair.reshape(2 * b * n_lights, c, h, w))
        f_cap, f_gold = feats.reshape(2, b, n_lights, -1, h, w).unbind(0)
        appeared, went = envelope_difference(capture, golden)
        diff = torch.cat([(f_cap - f_gold).abs(), capture - golden, appeared, went], dim=2)  # (B, L, C', H, W)
        cfg = self.cfg
        if cfg.concat_type == "linear":
            return diff.reshape(b, -1, h, w)
        # grid: tile light i at row i // x, column i % x; empty cells stay zero.
        grid = diff.new_zeros(b, diff.shape[2], cfg.grid_y * h, cfg.grid_x * w)
        for i in range(n_lights):
            r, col = divmod(i, cfg.grid_x)
            grid[:, :, r * h:(r + 1) * h, col * w:(col + 1) * w] = diff[:, i]
        return grid

    def features(self, capture: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """The embedding (before the head): what ``embed`` returns and k-NN mining compares."""
        x = self.trunk(self.difference(self._compare(capture, golden)))
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.embedding(pooled)

    def forward(self, capture: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(capture, golden))


def build_model(cfg: ModelConfig, seed: int | None = None) -> ChangeNetCNN:
    """Build the network; with ``seed`` the initial weights depend on it alone (the global RNG is untouched)."""
    if seed is None:
        return ChangeNetCNN(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ChangeNetCNN(cfg)
