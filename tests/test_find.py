"""Finding components offline (negopt/models/find.py): one status rule for every kind of source, and each
component's how-to built from its own fields. Crafted folders and files, no models built."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from negopt.core.params import load_params
from negopt.models.find import MissingWeightsError, check_components, component_status, require_component


@pytest.fixture
def profile(root, tmp_path):
    """The paper profile pointed at files under tmp_path that do not exist yet."""
    p = load_params(root / "params.yaml").models.paper
    return p.model_copy(update={"policy": str(tmp_path / "t5"), "aesthetic": str(tmp_path / "mlp.pth"),
                                "inception": str(tmp_path / "inception.pth"),
                                "aesthetic_url": "https://example.invalid/aesthetic-mlp.pth",
                                "inception_url": "https://example.invalid/inception-2015.pth"})


def test_a_folder_without_weight_files_is_missing_and_one_with_them_counts_its_parameters(profile, tmp_path):
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # found, but no weights: not available
    status = component_status(profile, "policy")
    assert not status.available and status.num_params is None and "dvc repro models" in status.how_to
    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, str(folder / "model.safetensors"))
    status = component_status(profile, "policy")
    assert status.available and status.num_params == 3 * 4 + 5 and status.how_to == ""
    assert status.location == str(folder)


def test_each_url_file_how_to_names_its_own_url_and_path(profile, tmp_path):
    how = {s.component: s.how_to for s in check_components(profile) if s.component in ("aesthetic", "inception")}
    assert "aesthetic-mlp.pth" in how["aesthetic"] and str(tmp_path / "mlp.pth") in how["aesthetic"]
    assert "inception-2015.pth" not in how["aesthetic"]
    assert "inception-2015.pth" in how["inception"] and "aesthetic-mlp.pth" not in how["inception"]


def test_a_truncated_file_is_missing_with_a_refetch_hint(profile, tmp_path):
    (tmp_path / "mlp.pth").write_bytes(b"not a torch file")
    status = component_status(profile, "aesthetic")
    assert not status.available and "is unreadable" in status.how_to and "re-fetch it" in status.how_to
    with pytest.raises(MissingWeightsError, match=r"aesthetic: .*mlp\.pth"):
        require_component(profile, "aesthetic")
