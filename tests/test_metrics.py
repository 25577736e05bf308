"""negopt.images.scorers against values computed by hand (stub models, so every number is known)."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from negopt.images import scorers as metrics
from negopt.images.scorers import ImageScorer, inception_kl, inception_score, inception_score_from_logits
from negopt.models.nets import AestheticMLP

# Known logits, picked by each image's first pixel value: class posteriors (0.9, 0.1) and (0.1, 0.9).
LOGITS = {0: [math.log(0.9), math.log(0.1)], 1: [math.log(0.1), math.log(0.9)]}


class StubExtractor(FeatureExtractorBase):
    """A torch-fidelity extractor whose logits_unbiased are LOGITS[first pixel]."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    def forward(self, x):
        table = torch.tensor([LOGITS[0], LOGITS[1]])
        return (table[x[:, 0, 0, 0].long()],)

    @staticmethod
    def get_provided_features_list():
        return ("logits_unbiased",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logits_unbiased"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)


def _images(first_pixels):
    imgs = torch.zeros(len(first_pixels), 3, 8, 8, dtype=torch.uint8)
    imgs[:, 0, 0, 0] = torch.tensor(first_pixels, dtype=torch.uint8)
    return imgs


def test_inception_kl_by_hand():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    marginal = torch.tensor([0.75, 0.25])
    # 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3); 1 ln(1/0.75) + 0 (0 log 0 = 0) = ln(4/3)
    expected = torch.tensor([0.5 * math.log(4 / 3), math.log(4 / 3)])
    assert torch.allclose(inception_kl(probs, marginal), expected, atol=1e-6)
    assert torch.allclose(inception_kl(probs, probs[0]), torch.tensor([0.0, math.log(2)]), atol=1e-6)


@pytest.fixture
def stub_inception(monkeypatch, tmp_path):
    """StubExtractor registered as the Inception for any input size; returns a (dummy) weights path."""
    name = "negopt-test-stub"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, StubExtractor)
    monkeypatch.setattr(metrics, "inception_extractor", lambda size: (name, StubExtractor))
    weights = tmp_path / "w.pt"
    torch.save({}, weights)
    return weights


def test_inception_score_from_known_logits(stub_inception):
    weights = stub_inception
    # Two images per class: marginal (0.5, 0.5); every KL = 0.9 ln 1.8 + 0.1 ln 0.2; IS = exp(KL).
    kl = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    mean, std = inception_score(_images([0, 0, 1, 1]), str(weights), input_size=75, splits=1)
    assert mean == pytest.approx(math.exp(kl), rel=1e-6)
    assert std == pytest.approx(0.0, abs=1e-9)
    # One class only: p(y|x) = p(y), IS = 1.
    mean, _ = inception_score(_images([1, 1, 1, 1]), str(weights), input_size=75, splits=1)
    assert mean == pytest.approx(1.0, abs=1e-9)


def test_inception_score_splits_by_hand(stub_inception):
    # splits > 1: torch-fidelity shuffles with its fixed seed (np.random.RandomState(2020)), cuts the N
    # images into `splits` consecutive chunks, and reports the mean and population std of exp(mean KL) per chunk.
    weights = stub_inception
    classes = [0, 0, 0, 1, 1, 0, 1, 0]
    order = np.random.RandomState(2020).permutation(len(classes))
    p = torch.tensor([[0.9, 0.1] if classes[i] == 0 else [0.1, 0.9] for i in order], dtype=torch.float64)

    def chunk_is(chunk):
        q = chunk.mean(0, keepdim=True)
        return math.exp((chunk * (chunk.log() - q.log())).sum(1).mean().item())

    per_split = [chunk_is(p[:4]), chunk_is(p[4:])]
    mean, std = inception_score(_images(classes), str(weights), input_size=75, splits=2)
    assert mean == pytest.approx(float(np.mean(per_split)), rel=1e-6)
    assert std == pytest.approx(float(np.std(per_split)), rel=1e-6)
    assert std > 1e-3  # the two chunks differ, so a dropped `splits` (one chunk, std 0) shows
    one, _ = inception_score(_images(classes), str(weights), input_size=75, splits=1)
    assert one == pytest.approx(chunk_is(p), rel=1e-6) and abs(one - mean) > 1e-3


def test_inception_score_from_logits_is_torch_fidelitys_on_the_same_logits(stub_inception):
    # evaluate's one-pass IS: torch-fidelity's formula on logits already computed gives its full pipeline's
    # number, shuffle and splits included (the stub's posteriors are (0.9, 0.1) / (0.1, 0.9) per class)
    # sorted classes: unshuffled, each of 2 splits holds one class (IS 1 each); shuffled, they mix (IS > 1)
    classes = [0, 0, 0, 0, 1, 1, 1, 1]
    logits = torch.tensor([[0.9, 0.1] if c == 0 else [0.1, 0.9] for c in classes]).log()
    for splits in (1, 2):
        full = inception_score(_images(classes), str(stub_inception), input_size=75, splits=splits)
        assert inception_score_from_logits(logits, splits) == pytest.approx(full, rel=1e-6)
    assert full[0] > 1.05  # the splits mixed: torch-fidelity's shuffle was applied
    with pytest.raises(ValueError, match="is_splits"):
        inception_score_from_logits(logits, 9)


def test_inception_score_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        inception_score(torch.zeros(4, 3, 8, 8), str(tmp_path / "w.pt"), 75, splits=1)
    with pytest.raises(ValueError, match="is_splits"):
        inception_score(_images([0, 1]), str(tmp_path / "w.pt"), 75, splits=10)


def test_inception_extractor_registers_small_input():
    name, cls = metrics.inception_extractor(75)
    assert name in FEATURE_EXTRACTORS_REGISTRY and cls.INPUT_IMAGE_SIZE == 75
    assert metrics.inception_extractor(299)[0] == "inception-v3-compat"
    with pytest.raises(ValueError, match="75"):
        metrics.inception_extractor(64)


# --- ImageScorer with stub CLIP / MLP / Inception ---------------------------------------------------------


class StubVisual(nn.Module):
    preprocess_cfg = {"size": (4, 4), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


class StubClip(nn.Module):
    """encode_image = channel means of the normalised pixels; encode_text = the token vectors themselves."""

    def __init__(self):
        super().__init__()
        self.visual = StubVisual()

    def encode_image(self, x):
        return x.mean(dim=(2, 3))

    def encode_text(self, tokens):
        return tokens.float()


TEXT_VECTORS = {"red": [1.0, 0.0, 0.0], "not red": [-1.0, 0.0, 0.0], "grey": [1.0, 1.0, 1.0]}


def stub_tokenizer(prompts):
    return torch.tensor([TEXT_VECTORS[p] for p in prompts])


class StubInception(nn.Module):
    def forward(self, x):
        return (torch.tensor([LOGITS[0], LOGITS[1]])[x[:, 0, 0, 0].long() % 2],)


def hand_mlp(d: int = 3) -> AestheticMLP:
    """out = 2 * (1 e0 + 2 e1) + 0.5 on the normalised embedding e (the MLP has no nonlinearity)."""
    mlp = AestheticMLP(d)
    with torch.no_grad():
        for layer in mlp.layers:
            if isinstance(layer, nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        mlp.layers[0].weight[0, :2] = torch.tensor([1.0, 2.0])
        for i in (2, 4, 6):
            mlp.layers[i].weight[0, 0] = 1.0
        mlp.layers[7].weight[0, 0] = 2.0
        mlp.layers[7].bias[0] = 0.5
    return mlp


def make_scorer():
    return ImageScorer(StubClip(), stub_tokenizer, hand_mlp(), StubInception(), batch_size=2)


def test_aesthetic_formula_on_known_embedding():
    scorer = make_scorer()
    # e = (3, 4, 0) -> normalised (0.6, 0.8, 0) -> 2 * (0.6 + 1.6) + 0.5 = 4.9 (unnormalised would give 22.5)
    out = scorer.aesthetic_from_embeddings(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 5.0]]))
    assert torch.allclose(out, torch.tensor([4.9, 0.5]), atol=1e-6)


def test_aesthetic_mlp_has_laion_key_layout():
    keys = set(AestheticMLP(768).state_dict())
    expected = {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}
    assert keys == expected
    shapes = [tuple(v.shape) for k, v in AestheticMLP(768).state_dict().items() if k.endswith("weight")]
    assert shapes == [(1024, 768), (128, 1024), (64, 128), (16, 64), (1, 16)]


def test_clip_score_matches_explicit_cosine():
    scorer = make_scorer()
    imgs = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    imgs[0, 0] = 255  # pure red: normalised channels (2, -2, -2)
    imgs[1, :] = 128  # grey: (128/255 - 0.5) / 0.25 in every channel
    imgs[2, 0] = 255
    prompts = ["red", "grey", "not red"]
    out = scorer.clip_score(imgs, prompts)
    red = torch.tensor([2.0, -2.0, -2.0])
    g = (128 / 255 - 0.5) / 0.25
    grey = torch.tensor([g, g, g])
    cos0 = float(red @ torch.tensor([1.0, 0, 0]) / red.norm())  # 2 / sqrt(12)
    ones = torch.ones(3)
    cos1 = float(grey @ ones / (grey.norm() * ones.norm()))  # grey is parallel to (1, 1, 1): 1
    assert cos0 == pytest.approx(2 / math.sqrt(12))
    assert torch.allclose(
        out, torch.tensor([100 * cos0, 100 * cos1, 0.0]), atol=1e-3
    )  # cos -0.577 clamps to 0


def test_reward_terms_use_batch_or_given_marginal():
    scorer = make_scorer()
    imgs = _images([0, 0, 1])
    imgs[:, :, 1:, 1:] = 100
    terms = scorer.reward_terms(imgs, ["red", "grey", "red"])
    assert set(terms) == {"aesthetic", "clip", "fidelity"}
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    q = p.mean(0)  # (19/30, 11/30)
    expected = (p * (p / q).log()).sum(1)
    assert torch.allclose(terms["fidelity"], expected, atol=1e-5)
    fixed = scorer.reward_terms(imgs, ["red", "grey", "red"], marginal=torch.tensor([0.5, 0.5]))
    kl = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    assert torch.allclose(fixed["fidelity"], torch.full((3,), kl), atol=1e-5)
    assert torch.equal(fixed["clip"], terms["clip"]) and torch.equal(fixed["aesthetic"], terms["aesthetic"])


def test_scorer_batches_do_not_change_results():
    imgs = torch.randint(0, 256, (5, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    a = ImageScorer(StubClip(), stub_tokenizer, hand_mlp(), StubInception(), batch_size=2).aesthetic(imgs)
    b = ImageScorer(StubClip(), stub_tokenizer, hand_mlp(), StubInception(), batch_size=5).aesthetic(imgs)
    assert torch.allclose(a, b, atol=1e-6)


def test_clip_pixels_normalise_by_the_preprocess_mean_and_std():
    # stub preprocess: mean 0.5, std 0.25, size 4 (no resize): 255 -> (1 - 0.5) / 0.25 = 2, 0 -> -2, 51 -> -1.2
    imgs = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    imgs[0, 0], imgs[0, 2] = 255, 51
    x = make_scorer().clip_pixels(imgs)
    assert x.shape == (1, 3, 4, 4)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([2.0, -2.0, -1.2]), atol=1e-6)
