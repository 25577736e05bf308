"""The world's image scorers: the aesthetic MLP (true quality from CLIP embeddings) and an Inception
classifier of scene classes (so Inception Score posteriors mean something).

Aesthetic MLP: :class:`negopt.models.nets.AestheticMLP` (the LAION layout, linear layers only) on the
world CLIP's L2-normalised image embeddings ``[N, D]``, regressed by MSE onto ``10 * image_quality``
(:func:`negopt.world.quality.image_quality`), so scores run 0-10 as LAION's run ~1-10. Saved as a
safetensors state dict that ``negopt.models.loader.load_aesthetic`` reads.

Inception classifier: torch-fidelity's ``FeatureExtractorInceptionV3`` state dict (the layout the
project's ``build_inception`` loads at ``inception_input_size``). See :func:`train_inception`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from negopt.world.dataset import RenderedSet
from negopt.world.grammar import COUNT_WORDS, FOREGROUND, SHAPES
from negopt.world.quality import image_quality


@dataclass
class AestheticConfig:
    """Optimisation of the aesthetic MLP (full-batch-ish Adam on precomputed embeddings)."""

    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 0


@torch.no_grad()
def clip_image_embeddings(model, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image embeddings ``[N, D]`` of uint8 images, preprocessed as the project's scorer does
    (:func:`negopt.metrics.clip_pixels` at the model's own size, mean and std)."""
    from negopt.images.scorers import clip_pixels, open_clip_input_spec

    size, mean, std = open_clip_input_spec(model)
    parts = [model.encode_image(clip_pixels(torch.from_numpy(images[i:i + batch_size]), size, mean, std))
             for i in range(0, len(images), batch_size)]
    return torch.nn.functional.normalize(torch.cat(parts).float(), dim=-1)


def train_aesthetic(cfg: AestheticConfig, embeddings: torch.Tensor, quality: np.ndarray, out_path: str | Path,
                    progress: bool = True) -> Path:
    """Fit ``AestheticMLP(D)`` to ``10 * quality`` from ``embeddings`` ``[N, D]``; save a safetensors state dict."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from negopt.models.nets import AestheticMLP

    torch.manual_seed(cfg.seed)
    mlp = AestheticMLP(embeddings.shape[1]).train()
    target = torch.as_tensor(10.0 * np.asarray(quality), dtype=torch.float32)
    opt = torch.optim.Adam(mlp.parameters(), lr=cfg.learning_rate)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="aesthetic", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(target), (cfg.batch_size,), generator=gen)
        loss = torch.nn.functional.mse_loss(mlp(embeddings[idx]).squeeze(-1), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in mlp.eval().state_dict().items()}, str(out_path))
    return out_path


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)


def scene_classes() -> list[tuple[str, int, str]]:
    """The classifier's classes in index order: (shape, count, fg) for 3 x 3 x 6 = 54 scene classes."""
    return [(s, c, f) for s in SHAPES for c in COUNT_WORDS for f in FOREGROUND]


def scene_labels(truth) -> np.ndarray:
    """The class index of each truth row (:func:`scene_classes` order), int64 ``[N]``."""
    index = {k: i for i, k in enumerate(scene_classes())}
    return np.array([index[(s, int(c), f)] for s, c, f in zip(truth["shape"], truth["count"], truth["fg"],
                                                              strict=True)], dtype=np.int64)


def quality_targets(data: RenderedSet) -> np.ndarray:
    """``image_quality`` of every image of ``data`` (the aesthetic MLP's target before the x10)."""
    return image_quality(data.truth)


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(json.dumps(asdict(cfg), indent=1) + "\n")


# --- Inception classifier ------------------------------------------------------------------------------

#: torch-fidelity InceptionV3 modules in forward order, split where training starts: the stem (up to
#: Mixed_6e; random, BatchNorm statistics from world images) stays frozen, the head is trained. At 75 px
#: the stem ends at 3 x 3 and the head runs at 1 x 1, so training the head costs ~70 MFLOP an image
#: where the whole network would cost ~1 GFLOP
STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
        "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
        "Mixed_6e")
HEAD = ("Mixed_7a", "Mixed_7b", "Mixed_7c")


@dataclass
class InceptionConfig:
    """The Inception classifier: input size (the profile's ``inception_input_size``) and optimisation."""

    input_size: int = 75
    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 1e-3
    unused_logit: float = -20.0  # logit of each of the 1008 - 54 unused classes on a typical image
    seed: int = 0


def random_extractor(cfg: InceptionConfig, tmp_dir: str | Path):
    """torch-fidelity's extractor class for ``cfg.input_size`` (:func:`negopt.metrics.inception_extractor`)
    filled with a seeded random state dict (:func:`negopt.models.tiny.random_inception_state_dict`)."""
    from negopt.images.scorers import inception_extractor
    from negopt.models.tiny import random_inception_state_dict

    path = Path(tmp_dir) / "random_inception.pt"
    torch.save(random_inception_state_dict(cfg.seed, cfg.input_size), path)
    name, cls = inception_extractor(cfg.input_size)
    return cls(name, ["2048"], feature_extractor_weights_path=str(path))


def stem_forward(net, images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> the Mixed_6e activation ``[B, 768, s, s]``, as the extractor's own forward
    computes it (TF1-style bilinear resize to ``INPUT_IMAGE_SIZE``, ``(x - 128) / 128``, then :data:`STEM`)."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(net.INPUT_IMAGE_SIZE,) * 2,
                                                  align_corners=False)
    x = (x - 128) / 128
    for name in STEM:
        x = getattr(net, name)(x)
    return x


def head_forward(net, x: torch.Tensor) -> torch.Tensor:
    """The Mixed_6e activation -> the pooled 2048 features (:data:`HEAD`, average pool, flatten)."""
    for name in HEAD:
        x = getattr(net, name)(x)
    return torch.flatten(net.AvgPool(x), 1)


@torch.no_grad()
def fit_batchnorm(net, modules: tuple[str, ...], images: np.ndarray, forward) -> None:
    """Set the BatchNorm statistics inside ``modules`` to those of ``images`` (one cumulative pass in train
    mode), as the real Inception's hold ImageNet's: a random stem then passes world images at unit scale."""
    bns = [m for name in modules for m in getattr(net, name).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    forward(torch.from_numpy(images))
    net.eval()
    for bn in bns:
        bn.momentum = 0.1


def train_inception(cfg: InceptionConfig, data: RenderedSet, out_path: str | Path, progress: bool = True) -> Path:
    """An Inception whose first :func:`scene_classes` logits classify the scene (shape x count x fg).

    1. A random torch-fidelity InceptionV3 at ``cfg.input_size``; stem BatchNorm statistics fitted to 512
       world images (:func:`fit_batchnorm`); stem activations of ``data`` cached (float16).
    2. The head (:data:`HEAD`) and a bias-free 2048 -> 54 linear layer trained by cross-entropy on
       :func:`scene_labels` (bias-free because the IS reads ``logits_unbiased = features @ fc.weight.T``).
    3. ``fc`` written out: rows 0-53 the trained layer; rows 54-1007 ``-a * u`` with ``u`` the unit mean
       feature, ``a`` such that those logits sit near ``cfg.unused_logit`` (features are post-ReLU means,
       so they are negative on every image) and the posterior lives on the 54 scene classes; bias 0.
    4. ``torch.save`` of the state dict (torch-fidelity's format), ``<out>.classes.json`` beside it.
    """
    import tempfile

    from tqdm.auto import tqdm

    classes = scene_classes()
    with tempfile.TemporaryDirectory() as tmp:
        net = random_extractor(cfg, tmp)
    fit_batchnorm(net, STEM, data.images[:512], lambda x: stem_forward(net, x))
    with torch.no_grad():
        cached = torch.cat([stem_forward(net, torch.from_numpy(data.images[i:i + 256])).half()
                            for i in tqdm(range(0, len(data), 256), desc="inception stem", disable=not progress)])
    labels = torch.from_numpy(scene_labels(data.truth))
    head = [getattr(net, name) for name in HEAD]
    torch.manual_seed(cfg.seed)
    linear = torch.nn.Linear(2048, len(classes), bias=False)
    params = [p for m in head for p in m.parameters()] + list(linear.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.learning_rate)
    gen = torch.Generator().manual_seed(cfg.seed)
    for m in head:
        m.train()
    bar = tqdm(range(cfg.steps), desc="inception", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(labels), (cfg.batch_size,), generator=gen)
        loss = torch.nn.functional.cross_entropy(linear(head_forward(net, cached[idx].float())), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    net.eval()
    with torch.no_grad():
        feats = torch.cat([head_forward(net, cached[i:i + 256].float()) for i in range(0, min(len(cached), 2048), 256)])
        u = torch.nn.functional.normalize(feats.mean(0), dim=0)
        scale = -cfg.unused_logit / float((feats @ u).mean())
        net.fc.weight.copy_(-scale * u.expand_as(net.fc.weight))
        net.fc.weight[: len(classes)] = linear.weight
        net.fc.bias.zero_()
    net.requires_grad_(False)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, out_path)
    out_path.with_suffix(".classes.json").write_text(json.dumps(
        {"classes": [list(c) for c in classes], "train": asdict(cfg)}, indent=1) + "\n")
    return out_path


def load_inception(path: str | Path, input_size: int = 75):
    """The saved classifier through the project's own builder (``negopt.metrics.build_inception``),
    returning ``logits_unbiased`` ``[N, 1008]`` for uint8 images."""
    from negopt.images.scorers import build_inception

    return build_inception(str(path), input_size)
