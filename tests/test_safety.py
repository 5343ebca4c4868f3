"""Safety: model files, training checkpoints and encoder weights never execute code from the file."""

from __future__ import annotations

import pytest
import torch
from _synthetic import SMALL, make_section, progress_off

import phg2st_sc as phg2st
from phg2st_sc._model._encoders import get_encoder


class Exploit:
    """Unpickling this runs `pathlib.Path(marker).touch()`: proof of code execution if the marker appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _crafted(path, marker, payload):
    """A torch file that also carries the exploit next to real tensors."""
    torch.save({**payload, "exploit": Exploit(marker)}, path)
    # the exploit works when unpickled without weights_only (the test would not prove anything otherwise)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()


KW = {**SMALL, "hidden": 16, "max_epochs": 1, "validation": None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small run that leaves both a model file and a training checkpoint, and its section."""
    folder = tmp_path_factory.mktemp("safety")
    a = make_section(folder, side=5)
    with progress_off():
        model = phg2st.tl.fit(a, checkpoint_dir=folder / "c", **KW)
    model.save(folder / "good.pt")
    return a, folder


def test_a_model_file_with_code_is_refused_and_not_run(tmp_path, trained):
    _, folder = trained
    payload = torch.load(folder / "good.pt", weights_only=True)
    marker = tmp_path / "pwned"
    _crafted(tmp_path / "evil.pt", marker, payload)
    with pytest.raises(ValueError, match="not a readable phg2st-sc model"):
        phg2st.PHG2ST.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_encoder_weights_with_code_are_refused_and_not_run(tmp_path):
    import torchvision

    state = torchvision.models.resnet50().state_dict()
    marker = tmp_path / "pwned"
    _crafted(tmp_path / "resnet.pth", marker, state)
    with pytest.raises(ValueError, match="refused"):
        get_encoder("resnet50", tmp_path / "resnet.pth")
    assert not marker.exists()


def test_a_checkpoint_with_code_is_refused_and_not_run(tmp_path, trained):
    a, folder = trained
    payload = torch.load(folder / "c" / "last.ckpt", weights_only=True)
    marker = tmp_path / "pwned"
    _crafted(tmp_path / "evil.ckpt", marker, payload)
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        phg2st.tl.fit(a, resume=tmp_path / "evil.ckpt", **KW)
    assert not marker.exists()
