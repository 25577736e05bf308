"""Typed schema for ``params.yaml``, validated when a stage starts.

One pydantic model per section; ``extra="forbid"`` so a misspelt key fails instead of being
ignored, and ``strict=True`` so ``"400"`` is not an int and ``"yes"`` is not a bool (an int is still
a valid float). :func:`load_params` turns a ``ValidationError`` into one message that names every bad
key (``sft.learning_rate: Input should be greater than 0``) and the file it came from.

Defaults: the values here are the defaults, and ``params.yaml`` repeats them so DVC can track each
one; ``tests/test_params.py`` fails if the two disagree. Model profiles have no defaults (``tiny`` and
``paper`` differ in every field), so there is nothing there to drift.

Bounds that are real constraints (RLOO's ``k >= 2``, an image size that is a multiple of 8) fail at
load time; recommendations (``rl.test.prompts >= 128`` for a meaningful paired test) are
:func:`recommendations`, printed as warnings at stage start so small smoke runs stay possible.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    field_validator,
    model_validator,
)

from negopt.core.errors import ParamsError
from negopt.reward.terms import REWARD_TERMS, default_weights, scored_weights

Pos = Annotated[float, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]

#: the comparison's methods, the names generate.methods and compare.* accept; negopt/compare/methods.py implements
#: each one (a test checks that every name has its function there and no function lacks a name here)
METHODS = ("none", "generic", "ground_truth", "retrieval", "best_of_n", "sft", "rl")


class Section(BaseModel):
    # allow_inf_nan=False: YAML's .inf / .nan pass every `gt=0` bound (an infinite learning rate validated)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Base(Section):
    seed: NonNegInt = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"


class Paths(Section):
    raw: str = "data/raw"
    sources: str = "data/sources"  # where file: sources live (or are linked): scrape's dep, so an edit re-runs it
    clean: str = "data/clean"
    tiny_models: str = "models/tiny"
    world_models: str = "models/world"
    sft: str = "models/sft"
    rl: str = "models/rl"
    images: str = "data/images"
    scores: str = "data/scores"  # evaluate's per-image scores and Inception posteriors (negopt/compare/scores.py)
    metrics: str = "metrics"
    plots: str = "plots"
    report: str = "report"
    checkpoints: str = "checkpoints"


class SampleSource(Section):
    rows: Annotated[int, Field(ge=2000)] = 3000
    seed: NonNegInt = 0


class WorldSource(Section):
    rows: Annotated[int, Field(ge=2000)] = 3000
    seed: NonNegInt = 0


class HfSource(Section):
    dataset: str = "mikeogezi/negopt_full"
    revision: str = "main"
    split: str = "train"


class PlaygroundSource(Section):
    base_url: str = "https://playground.com"
    endpoint: str = "/api/images/search"
    query: str = "portrait"
    user_id: str = ""
    limit: PosInt = 250
    max_pages: PosInt = 20
    max_rows: PosInt = 5000
    requests_per_second: Pos = 1.0
    max_retries: NonNegInt = 5
    backoff_base: NonNeg = 1.0
    timeout: Pos = 30.0
    max_response_bytes: PosInt = 50_000_000


class CleanRules(Section):
    min_prompt_chars: NonNegInt = 3
    max_prompt_chars: PosInt = 1000
    min_negative_chars: NonNegInt = 3
    max_negative_chars: PosInt = 1000
    min_likes: NonNegInt = 0
    nsfw_filter: bool = False

    @model_validator(mode="after")
    def _bounds_ordered(self) -> CleanRules:
        if self.min_prompt_chars > self.max_prompt_chars:
            raise ValueError("min_prompt_chars must be <= max_prompt_chars")
        if self.min_negative_chars > self.max_negative_chars:
            raise ValueError("min_negative_chars must be <= max_negative_chars")
        return self


class Split(Section):
    train: Fraction = 0.8
    val: Fraction = 0.1
    test: Fraction = 0.1
    seed: NonNegInt = 42
    near_duplicate_threshold: Fraction = 0.7  # word-3-gram Jaccard that joins two prompts' group; 0 = exact only
    group_by: Literal["", "model", "url", "sampler", "id"] = ""  # a column to group by instead of the prompt

    @model_validator(mode="after")
    def _sums_to_one(self) -> Split:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class Data(Section):
    source: str = "sample"
    sample: SampleSource = SampleSource()
    world: WorldSource = WorldSource()
    hf: HfSource = HfSource()
    playground: PlaygroundSource = PlaygroundSource()
    clean: CleanRules = CleanRules()
    split: Split = Split()

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v in ("sample", "world", "hf", "playground") or (v.startswith("file:") and len(v) > 5):
            return v
        raise ValueError(f"unknown source {v!r}: use sample, world, hf, playground or file:<path>")


class TinyBuild(Section):
    seed: NonNegInt = 0
    t5_vocab_size: Annotated[int, Field(ge=300)] = 1000
    # where the policy's BPE may merge: "word" (GPT-2's split) or "phrase" (between commas: a frequent
    # negative-prompt phrase with its comma becomes one token; negopt/models/t5.py)
    t5_pretokenizer: Literal["word", "phrase"] = "word"
    sd_vocab_size: Annotated[int, Field(ge=300)] = 1000


class WorldBuild(Section):
    """How the models stage trains the world zoo (negopt/world/zoo.py). Each model's architecture and
    optimiser are configs in code (negopt/world/train_*.py), saved beside the zoo as zoo_config.json; these are
    the sizes a run may trade for time."""

    seed: NonNegInt = 0
    train_images: Annotated[int, Field(ge=64)] = 24000
    calibration_images: Annotated[int, Field(ge=200)] = 4000
    inception_images: Annotated[int, Field(ge=32)] = 8000
    vae_steps: PosInt = 1000
    diffusion_steps: PosInt = 1000
    clip_steps: PosInt = 2400
    aesthetic_steps: PosInt = 2000
    inception_steps: PosInt = 600
    t5_vocab_size: Annotated[int, Field(ge=300)] = 1000
    # paired prompts of the pipeline's check against the truth (each defect's response to its own word, clean
    # alignment; negopt/world/checks.py), written to metrics/models.json; 0 = skip it
    check_prompts: NonNegInt = 128


class Profile(Section):
    """Where each component of a profile comes from: a local path or a hub id."""

    policy: str
    sd: str
    clip_name: str
    clip_pretrained: str
    clip_config: str  # "" for a model config open_clip ships
    aesthetic: str
    inception: str
    aesthetic_url: str  # where `negopt models fetch` downloads `aesthetic` from ("" = not fetchable)
    inception_url: str  # where it downloads `inception` from (torch.hub's name-<sha256 prefix> name)
    inception_input_size: Annotated[int, Field(ge=75)]
    image_size: Annotated[int, Field(ge=8, multiple_of=8)]  # the VAE downsamples by 8
    num_inference_steps: PosInt
    guidance_scale: NonNeg
    # Human-preference scorers (negopt/images/preference.py), "" = not named: evaluate reports a metric for each one
    # named, and its reward term (reward.weights.hpsv2 / pickscore) may then carry a weight.
    hpsv2_name: str  # open_clip architecture of HPSv2 (ViT-H-14)
    hpsv2: str  # its weights: a local .pt / .safetensors, or a hub file "org/repo/file"
    hpsv2_config: str  # an open_clip config file to register first ("" for one open_clip ships)
    pickscore: str  # transformers CLIPModel folder or hub id
    pickscore_processor: str  # its CLIPProcessor (image processor + tokenizer): folder or hub id
    # How every renderer's text reaches the text encoder (negopt/images/render.py::text_inputs): "literal" as diffusers
    # reads it (brackets are text, tokens past the window cut) | "a1111" as AUTOMATIC1111 reads it (weights, emphasis,
    # long texts in chunks of the window)
    prompt_syntax: Literal["literal", "a1111"]
    # Textual-inversion embeddings the loader puts into the pipeline: {name as a prompt writes it: a local file, or a
    # hub file "org/repo/file" or "datasets/org/repo/file"}; {} for none
    textual_inversions: dict[str, str]

    @field_validator("textual_inversions")
    @classmethod
    def _token_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [name for name in v if not re.fullmatch(r"[^\sA-Z()\[\]:<>]+", name)]
        if bad:  # CLIP's tokenizer lower-cases the text, so a name with a capital would never be matched
            raise ValueError(f"textual_inversions: name(s) {bad} must be lower case, without spaces, brackets or "
                             "colons (the tokenizer lower-cases prompts: EasyNegative is matched as easynegative)")
        empty = [name for name, ref in v.items() if not ref]
        if empty:
            raise ValueError(f"textual_inversions: {empty} name no file: give a path or a hub file org/repo/file")
        return v


class Models(Section):
    tiny_build: TinyBuild = TinyBuild()
    world_build: WorldBuild = WorldBuild()
    tiny: Profile
    world: Profile
    paper: Profile


class SftRetrieval(Section):
    """Retrieval-augmented SFT (negopt/policy/retrieval.py): the source carries the negatives of the prompt's ``k``
    nearest training prompts; the index is saved with the model. ``k`` 0: the prompt alone."""

    k: NonNegInt = 0
    # the share of training rows whose first retrieved negative is their own (self-retrieval), so a from-scratch
    # model learns to copy (negopt.policy.sft.training_contexts); 0 = neighbours only
    self_share: Fraction = 0.0


class SftRerank(Section):
    """The retrieve-and-rerank decode (negopt/policy/rerank.py): the model's negative or one of its ``neighbours``
    nearest training prompts' negatives, by weights fitted on val; kept only if they beat the model's own by
    ``min_z`` paired SE there. ``neighbours`` 0: the model's negative alone."""

    neighbours: NonNegInt = 8
    min_z: NonNeg = 3.0


class Sft(Section):
    task_prefix: str = "negative prompt: "
    max_source_length: PosInt = 64
    max_target_length: PosInt = 64
    learning_rate: Pos = 2e-3
    max_steps: PosInt = 200
    batch_size: PosInt = 32
    warmup_steps: NonNegInt = 30
    weight_decay: NonNeg = 0.0
    eval_steps: PosInt = 100
    save_steps: PosInt = 100
    max_eval_samples: PosInt = 512
    max_test_samples: PosInt = 1000
    # Batches of similar (source + target) length: random batches pad far more (docs/EXPERIMENTS.md, "SFT
    # against two baselines")
    group_by_length: bool = True
    retrieval: SftRetrieval = SftRetrieval()
    rerank: SftRerank = SftRerank()


class Decode(Section):
    """The deployed decode (negopt/policy/decode.py): sft ROUGE, the rl test, generate, suggest, the Python API."""

    num_beams: PosInt = 1
    do_sample: bool = False  # true: nucleus samples at top_p / temperature
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    temperature: Pos = 1.0
    max_new_tokens: PosInt = 48
    repetition_penalty: Annotated[float, Field(ge=1.0, le=3.0)] = 1.3


class Sampling(Section):
    """The policy's sampler (negopt/policy/sampling.py): RL rollouts, the reward calibration and best_of_n's
    candidates. The training distribution, whose log-probs RL's update needs; not the deployed decode."""

    temperature: Pos = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_new_tokens: PosInt = 32


class RewardWeights(RootModel[dict[str, float]]):
    """``reward.weights.<term>``: one weight per registered reward term (``negopt.reward.terms``), nothing else.

    The allowed keys are the registry's names, so a new term needs no schema edit; a name the registry
    does not know fails naming ``reward.weights.<name>``; a term left out gets its registered default weight.
    ``model_dump()`` is ``{term: weight}`` in registration order.
    """

    model_config = ConfigDict(frozen=True, strict=True, allow_inf_nan=False)
    root: dict[str, float] = Field(default_factory=default_weights)

    @field_validator("root")
    @classmethod
    def _registered_terms(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = [name for name in weights if name not in REWARD_TERMS]
        if unknown:
            raise ValueError("; ".join(f"reward.weights.{name}: no reward term of that name" for name in unknown)
                             + f" (registered terms: {', '.join(REWARD_TERMS)}; negopt/reward/terms.py)")
        negative = [name for name, w in weights.items() if w < 0]
        if negative:  # a negative weight trains the policy to make the term worse
            raise ValueError("; ".join(f"reward.weights.{name}: {weights[name]} is negative; use a weight >= 0 "
                                       "(0 turns the term off)" for name in negative))
        return default_weights() | weights

    def scored(self) -> dict[str, float]:
        """``{term: weight}`` of the terms scored (``negopt.reward.terms.scored_weights``: a preference model's
        term only when weighted): what calibration, the reward, the test and the card read."""
        return scored_weights(self.root)


class Calibration(Section):
    """The SFT samples that fix the reward's term statistics and Inception marginal before RL starts."""

    prompts: Annotated[int, Field(ge=2)] = 32
    samples_per_prompt: Annotated[int, Field(ge=2)] = 4  # a group shares one seed: its spread is what a negative moves


class Reward(Section):
    """The image reward RL trains on and best_of_n selects with (negopt/reward/): ``sum_t w_t z_t``, each term
    z-scored by its spread across the negatives of one prompt and seed."""

    weights: RewardWeights = RewardWeights()
    scale_floor: Fraction = 0.01
    calibration: Calibration = Calibration()
    image_batch_size: PosInt = 32
    rollout_inference_steps: NonNegInt = 0


class Ppo(Section):
    """PPO-clip's settings (``rl.algo: ppo``)."""

    clip_range: Pos = 0.2
    epochs: PosInt = 2


class Selection(Section):
    """Checkpoint selection (negopt/rl/selection.py): which step's weights ship, chosen on val prompts only."""

    by: Literal["val_reward", "last_step"] = "val_reward"
    every: PosInt = 25
    dense_steps: NonNegInt = 10
    min_ratio: Pos = 0.75
    patience: NonNegInt = 3
    stale_steps: NonNegInt = 25
    diversity_prompts: PosInt = 256
    reward_prompts: PosInt = 160
    reward_seeds: Annotated[int, Field(ge=1, le=16)] = 1
    min_z: NonNeg = 3.0
    seed: NonNegInt = 1234


class RlTest(Section):
    """The held-out test of RL against SFT: the same prompts and seeds for both, paired per prompt."""

    prompts: PosInt = 256  # >= 128 recommended (see recommendations)
    seeds_per_prompt: Annotated[int, Field(ge=1, le=16)] = 4
    seed: NonNegInt = 1234


class RlHealth(Section):
    """Bounds ``metrics/rl.json``'s health checks hold a finished run to (``negopt.rl.health``)."""

    max_abs_z: Pos = 1000.0
    max_kl: Pos = 12.0
    min_distinct_ratio: Fraction = 0.5


class Rl(Section):
    algo: Literal["rloo", "ppo"] = "rloo"
    steps: PosInt = 150
    batch_prompts: PosInt = 8
    k: Annotated[int, Field(ge=2)] = 4
    learning_rate: Pos = 6e-4
    warmup_steps: NonNegInt = 0
    kl_coef: NonNeg = 0.3
    max_grad_norm: Pos = 1.0
    restarts: NonNegInt = 4
    checkpoint_every: PosInt = 50
    ppo: Ppo = Ppo()
    selection: Selection = Selection()
    test: RlTest = RlTest()
    health: RlHealth = RlHealth()


class BestOfN(Section):
    n: Annotated[int, Field(ge=2)] = 4  # SFT samples per prompt, each rendered once on the selection seed
    selection_seed: NonNegInt = 1  # seeds the samples and the selection renders; must differ from generate.seed


class Generate(Section):
    prompts: str = "test"  # test (the clean held-out split) | file:<path> (negopt/data/prompt_files.py)
    methods: list[Literal[METHODS]] = list(METHODS)  # type: ignore[valid-type]
    generic_negative: str = (
        "ugly, blurry, low quality, lowres, deformed, bad anatomy, watermark, text, jpeg artifacts"
    )
    num_prompts: PosInt = 64
    seeds_per_prompt: PosInt = 2
    batch_size: PosInt = 32
    seed: NonNegInt = 0
    best_of_n: BestOfN = BestOfN()

    @model_validator(mode="after")
    def _selection_is_not_evaluation(self) -> Generate:
        if self.best_of_n.selection_seed == self.seed:
            raise ValueError(f"generate.best_of_n.selection_seed={self.seed} equals generate.seed: best_of_n would "
                             "select on the evaluation seeds; pick another selection_seed")
        return self

    @field_validator("prompts")
    @classmethod
    def _known_prompts(cls, v: str) -> str:
        if v == "test" or (v.startswith("file:") and len(v) > 5):
            return v
        raise ValueError(f"unknown prompts {v!r}: use test or file:<path> (.txt, .csv, .jsonl or .parquet)")


class Evaluate(Section):
    is_splits: PosInt = 10
    batch_size: PosInt = 64


class Compare(Section):
    candidates: list[Literal[METHODS]] = ["sft", "rl"]  # type: ignore[valid-type]
    baselines: list[Literal[METHODS]] = ["none", "generic", "ground_truth", "retrieval", "best_of_n"]  # type: ignore[valid-type]
    grid_prompts: PosInt = 8
    bootstrap_resamples: Annotated[int, Field(ge=100)] = 1000  # paired bootstrap over prompts (negopt/compare/intervals.py)
    bootstrap_seed: NonNegInt = 0
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95


PROFILES = ("tiny", "world", "paper")


class Params(Section):
    profile: Literal[PROFILES] = "tiny"  # type: ignore[valid-type]
    base: Base = Base()
    paths: Paths = Paths()
    data: Data = Data()
    models: Models
    sft: Sft = Sft()
    decode: Decode = Decode()
    sampling: Sampling = Sampling()
    reward: Reward = Reward()
    rl: Rl = Rl()
    generate: Generate = Generate()
    evaluate: Evaluate = Evaluate()
    compare: Compare = Compare()

    @model_validator(mode="after")
    def _world_reads_its_own_prompts(self) -> Params:
        # the world's models know only the world's words, and its oracle judges an image against the scene its
        # prompt names: any other prompt has no truth
        if self.profile == "world" and self.data.source != "world":
            raise ValueError(f"profile: world needs data.source: world (got data.source: {self.data.source!r}); "
                             "run `dvc exp run -S profile=world -S data.source=world`")
        return self

    @property
    def active(self) -> Profile:
        """The model profile that ``profile`` selects."""
        return getattr(self.models, self.profile)


def format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def validate_params(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(format_errors(err, source)) from None


def recommendations(params: Params) -> list[str]:
    """Settings that are valid but weaken a result; each line names the key and the advice."""
    notes = []
    if params.rl.test.prompts < 128:
        notes.append(f"rl.test.prompts={params.rl.test.prompts}: fewer than 128 test prompts give a weak paired "
                     "test of the RL gain; fine for a smoke run, raise it for results")
    return notes


def warn_recommendations(params: Params) -> None:
    for note in recommendations(params):
        warnings.warn(note, UserWarning, stacklevel=2)


class _Yaml12Floats(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string; YAML 1.2, which DVC writes with
    ``dvc exp run -S``, reads it as a float. Resolve floats the 1.2 way so strict typing accepts them."""


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def read_yaml(text: str):
    """YAML with 1.2-style floats (see :class:`_Yaml12Floats`); ints stay ints."""
    return yaml.load(text, Loader=_Yaml12Floats)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run from the project root, where params.yaml lives)")
    raw = read_yaml(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return validate_params(raw, str(path))
