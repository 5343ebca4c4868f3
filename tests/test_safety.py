"""Safety: model files, training checkpoints and encoder weights never execute code from the file."""

from __future__ import annotations

import pytest
import torch

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


def test_a_model_file_with_code_is_refused_and_not_run(tmp_path, synthetic_section):
    a = synthetic_section(side=5)
    model = phg2st.tl.fit(a, use_rep="X_tiny", hidden=16, heads=2, spot_depth=1, neighbour_depth=1,
                          max_epochs=1, accelerator="cpu", validation=None)  # fmt: skip
    model.save(tmp_path / "good.pt")
    payload = torch.load(tmp_path / "good.pt", weights_only=True)
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


def test_a_checkpoint_with_code_is_refused_and_not_run(tmp_path, synthetic_section):
    a = synthetic_section(side=5)
    kw = dict(use_rep="X_tiny", hidden=16, heads=2, spot_depth=1, neighbour_depth=1, max_epochs=1,
              accelerator="cpu", validation=None)  # fmt: skip
    phg2st.tl.fit(a, checkpoint_dir=tmp_path / "c", **kw)
    payload = torch.load(tmp_path / "c" / "last.ckpt", weights_only=True)
    marker = tmp_path / "pwned"
    _crafted(tmp_path / "evil.ckpt", marker, payload)
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        phg2st.tl.fit(a, resume=tmp_path / "evil.ckpt", **kw)
    assert not marker.exists()
