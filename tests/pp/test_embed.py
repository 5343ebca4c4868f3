"""embed_tiles on real C2 tiles, the encoder registry, the cache, and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from anndata import AnnData
from PIL import Image
from torch import nn

import phg2st_sc as phg2st
from phg2st_sc._model._encoders import IMAGENET_MEAN, IMAGENET_STD, get_encoder


class ColourStats(nn.Module):
    """A tiny deterministic encoder: per-channel mean and std and a coarse 2x2 pooling (15-d)."""

    def __init__(self, die_after: int | None = None):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.calls = 0
        self.die_after = die_after

    def forward(self, x):
        if self.calls == self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        pooled = nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return torch.cat([x.mean((2, 3)), x.std((2, 3)), pooled[:, :9]], 1) * self.scale


def normalise(tile: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(tile).permute(2, 0, 1)[None].float() / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def synthetic_section(tmp_path, coords, size=(600, 800)):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    path = tmp_path / "he.png"
    Image.fromarray(img).save(path)
    a = AnnData(np.ones((len(coords), 2), dtype=np.float32))
    a.obsm["spatial"] = np.asarray(coords, dtype=float)
    a.uns["spatial"] = {"s": {"images": {}, "scalefactors": {"tissue_hires_scalef": 1.0, "spot_diameter_fullres": 50.0},
                              "metadata": {"source_image_path": str(path), "microns_per_pixel": 1.0}}}  # fmt: skip
    return a, img


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.data
def test_c2_shapes_and_reuse(c2_embedded):
    a = c2_embedded
    p = a.uns["X_efficientnet_lite0"]["params"]
    assert a.obsm["X_efficientnet_lite0"].shape == (187, 1280) and a.obsm["X_efficientnet_lite0"].dtype == np.float32
    assert a.obsm["X_efficientnet_lite0_neighbours"].shape == (187, 25)
    tiles = a.uns["X_efficientnet_lite0"]["tile_embeddings"]
    assert tiles.shape == (p["neighbour_tiles"], 1280) and np.isfinite(tiles).all()
    assert p["tiles_embedded"] == 187 + p["neighbour_tiles"] and p["naive_crops"] == 187 * 26
    assert p["naive_crops"] / p["tiles_embedded"] >= 5  # the goal: at least 5x fewer encoder passes
    emb, mask = phg2st.pp.neighbour_embeddings(a, "X_efficientnet_lite0")
    assert emb.shape == (187, 25, 1280) and mask.all()  # C2's spots are far from the image border
    # different tiles give different embeddings
    assert np.linalg.norm(emb[0, 0] - emb[0, 24]) > 1e-3


@pytest.mark.data
def test_lattice_tile_equals_direct_crop(c2_embedded):
    """A neighbour embedding from the lattice equals embedding the same tile cut directly from the image."""
    a = c2_embedded
    full = phg2st.io.read_image(a)
    enc = get_encoder("efficientnet_lite0")
    cells = a.uns["X_efficientnet_lite0"]["tile_cells"]
    spot, slot = 5, 7
    cell = cells[a.obsm["X_efficientnet_lite0_neighbours"][spot, slot]]
    x0, y0 = cell * 224
    tile = full[y0 : y0 + 224, x0 : x0 + 224]
    with torch.inference_mode():
        direct = enc.model(normalise(tile).contiguous(memory_format=torch.channels_last)).numpy()[0]
    emb, _ = phg2st.pp.neighbour_embeddings(a, "X_efficientnet_lite0")
    np.testing.assert_allclose(emb[spot, slot], direct, rtol=1e-4, atol=1e-4)
    # and the spot tile is the 224 px square centred on the spot
    cx, cy = np.floor(a.obsm["spatial"][spot] - 112 + 0.5).astype(int)
    with torch.inference_mode():
        centred = enc.model(normalise(full[cy : cy + 224, cx : cx + 224])).numpy()[0]
    np.testing.assert_allclose(a.obsm["X_efficientnet_lite0"][spot], centred, rtol=1e-4, atol=1e-4)


@pytest.mark.data
def test_offline_weights_classify_imagenet_images():
    """The shipped weights map onto timm's model: a cat photo is a cat, a coffee cup is espresso (skimage data)."""
    import timm
    from skimage import data

    from phg2st_sc._model._encoders import packaged_lite0_state_dict

    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    model.load_state_dict(packaged_lite0_state_dict(model))
    for image, classes in ((data.chelsea(), {281, 282, 285}), (data.coffee(), {504, 967, 968})):
        x = normalise(np.asarray(Image.fromarray(image).resize((224, 224))))
        with torch.inference_mode():
            assert int(model(x).argmax()) in classes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_module_already_on_the_gpu_is_probed_there():
    # a second embed_tiles call with the same module finds it on the GPU: the dry run must go there too
    module = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 5)).to("cuda")
    assert get_encoder(module, input_size=32).dim == 5


def test_small_encoder_masks_padding_and_determinism(tmp_path):
    a, img = synthetic_section(tmp_path, [[20, 30], [400, 300], [790, 590]])
    enc = ColourStats()
    phg2st.pp.embed_tiles(a, encoder=enc, tile_size=64, grid_size=3, key_added="X_c")
    assert a.obsm["X_c"].shape == (3, 15)
    idx = a.obsm["X_c_neighbours"]
    assert (idx[0].reshape(3, 3)[0] == -1).all() and (idx[1] >= 0).all() and (idx[2].reshape(3, 3)[2] == -1).all()
    # the first spot's tile is padded with white above/left of the image
    x = normalise(np.pad(img[0:62, 0:52], ((2, 0), (12, 0), (0, 0)), constant_values=255))
    np.testing.assert_allclose(a.obsm["X_c"][0], enc(x).detach().numpy()[0], rtol=1e-5, atol=1e-5)
    emb, mask = phg2st.pp.neighbour_embeddings(a, "X_c")
    assert (emb[~mask] == 0).all() and mask.sum() == (idx >= 0).sum()
    again = phg2st.pp.embed_tiles(a, encoder=enc, tile_size=64, grid_size=3, key_added="X_c", copy=True)
    np.testing.assert_array_equal(again.obsm["X_c"], a.obsm["X_c"])
    np.testing.assert_array_equal(again.uns["X_c"]["tile_embeddings"], a.uns["X_c"]["tile_embeddings"])


def test_cache_resumes_an_interrupted_run(tmp_path):
    coords = np.random.default_rng(1).uniform(50, 550, (40, 2))
    a, _ = synthetic_section(tmp_path, coords)
    enc = ColourStats()
    reference = phg2st.pp.embed_tiles(
        a, encoder=enc, tile_size=32, grid_size=3, batch_size=8, copy=True, key_added="X_c"
    )
    total = reference.uns["X_c"]["params"]["tiles_embedded"]

    dying = ColourStats(die_after=4)  # one dry run to find the output size, then three batches
    with pytest.raises(KeyboardInterrupt):
        phg2st.pp.embed_tiles(
            a, encoder=dying, tile_size=32, grid_size=3, batch_size=8, cache_dir=tmp_path / "c", key_added="X_c"
        )
    assert "X_c" not in a.obsm  # nothing written by the failed run
    resumed = phg2st.pp.embed_tiles(a, encoder=ColourStats(), tile_size=32, grid_size=3, batch_size=8,
                                    cache_dir=tmp_path / "c", key_added="X_c", copy=True)  # fmt: skip
    p = resumed.uns["X_c"]["params"]
    assert p["batches_from_cache"] == 3 and p["encoder_passes_this_run"] == total - 24
    np.testing.assert_allclose(resumed.obsm["X_c"], reference.obsm["X_c"], rtol=1e-6)
    np.testing.assert_allclose(
        resumed.uns["X_c"]["tile_embeddings"], reference.uns["X_c"]["tile_embeddings"], rtol=1e-6
    )
    # a corrupted batch file is recomputed, not trusted
    batch = sorted((tmp_path / "c").glob("*/batch_0000000.npy"))[0]
    batch.write_bytes(b"garbage")
    again = phg2st.pp.embed_tiles(a, encoder=ColourStats(), tile_size=32, grid_size=3, batch_size=8,
                                  cache_dir=tmp_path / "c", key_added="X_c", copy=True)  # fmt: skip
    assert again.uns["X_c"]["params"]["encoder_passes_this_run"] == 8


def test_mpp_resamples(tmp_path):
    a, img = synthetic_section(tmp_path, [[300, 300]])
    a.uns["spatial"]["s"]["metadata"]["microns_per_pixel"] = 0.25
    enc = ColourStats()
    phg2st.pp.embed_tiles(a, encoder=enc, tile_size=32, mpp=0.5, grid_size=0, key_added="X_c")
    assert a.uns["X_c"]["params"]["region_px"] == 64  # 32 px at 0.5 µm/px cover 64 px at 0.25 µm/px
    tile = np.asarray(Image.fromarray(img[268:332, 268:332]).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(a.obsm["X_c"][0], enc(normalise(tile)).detach().numpy()[0], rtol=1e-5, atol=1e-5)
    assert "X_c_neighbours" not in a.obsm


@pytest.mark.data
def test_spatialdata_input_matches_anndata(c2):
    sdata = phg2st.io.to_spatialdata(c2)
    enc = ColourStats()
    phg2st.pp.embed_tiles(sdata, encoder=enc, grid_size=3, key_added="X_c")
    phg2st.pp.embed_tiles(c2, encoder=enc, grid_size=3, key_added="X_c")
    table = sdata.tables["table"]
    np.testing.assert_allclose(table.obsm["X_c"], c2.obsm["X_c"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(table.obsm["X_c_neighbours"], c2.obsm["X_c_neighbours"])


def test_uni_loading_path(tmp_path, monkeypatch):
    """A randomly initialised checkpoint of UNI's architecture loads strictly and reproduces its outputs."""
    import timm

    torch.manual_seed(0)
    ref = timm.create_model("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5, num_classes=0,
                            dynamic_img_size=True).eval()  # fmt: skip
    path = tmp_path / "pytorch_model.bin"
    torch.save(ref.state_dict(), path)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        expected = ref(x)
    del ref
    enc = get_encoder("uni", path)
    assert enc.name == "uni" and enc.dim == 1024
    with torch.inference_mode():
        torch.testing.assert_close(enc.model(x), expected)
    monkeypatch.setenv("PHG2ST_UNI_WEIGHTS", str(path))
    assert get_encoder("uni").fingerprint == enc.fingerprint


def test_encoder_errors(tmp_path, monkeypatch):
    import timm

    monkeypatch.delenv("PHG2ST_UNI_WEIGHTS", raising=False)
    with pytest.raises(ValueError, match="efficientnet_lite0") as err:
        get_encoder("uni")
    assert "MahmoodLab/UNI" in str(err.value)
    with pytest.raises(ValueError, match="Unknown encoder"):
        get_encoder("vit_giant")
    with pytest.raises(ValueError, match="local weights"):
        get_encoder("resnet50")
    # a checkpoint of another architecture
    wrong = tmp_path / "wrong.pth"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), wrong)
    with pytest.raises(ValueError, match="do not fit"):
        get_encoder("resnet50", wrong)
    # a file that carries a pickled object instead of tensors is refused, never executed
    evil = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(1), "payload": warnings.WarningMessage}, evil)
    with pytest.raises(ValueError, match="refused"):
        get_encoder("resnet50", evil)
    with pytest.raises(ValueError, match="\\(B, dim\\)"):
        get_encoder(lambda x: x)
    with pytest.raises(TypeError):
        get_encoder(42)


def test_resnet50_local_weights(tmp_path):
    import timm

    path = tmp_path / "resnet50.pth"
    torch.save(timm.create_model("resnet50", num_classes=1000).state_dict(), path)  # torchvision-style keys + fc
    enc = get_encoder("resnet50", path)
    assert enc.dim == 2048 and enc.channels_last


@pytest.mark.data
def test_bad_input_leaves_adata_unchanged(load_her2st, tmp_path):
    a3 = load_her2st("A3")
    snapshot = a3.copy()
    with pytest.raises(phg2st.MissingImageError, match="A3"):
        phg2st.pp.embed_tiles(a3, encoder=ColourStats())
    assert set(a3.obsm) == set(snapshot.obsm) and set(a3.uns) == set(snapshot.uns)
    a, _ = synthetic_section(tmp_path, [[100, 100], [5000, 100]])
    with pytest.raises(ValueError, match="outside the 800 x 600 image"):
        phg2st.pp.embed_tiles(a, encoder=ColourStats())
    a.obsm["spatial"] = np.array([[100.0, 100.0], [200.0, 100.0]])
    for kwargs, exc in [
        (dict(encoder="nope"), ValueError),
        (dict(encoder=ColourStats(), grid_size=4), ValueError),
        (dict(encoder=ColourStats(), tile_size=4), ValueError),
        (dict(encoder=ColourStats(), mpp=-1.0), ValueError),
        (dict(encoder=ColourStats(), batch_size=0), ValueError),
        (dict(encoder=ColourStats(), image_key="img"), ValueError),
        (dict(encoder=lambda x: x.mean((2, 3)), cache_dir=tmp_path / "c"), ValueError),
    ]:
        with pytest.raises(exc):
            phg2st.pp.embed_tiles(a, **kwargs)
    assert not [k for k in a.obsm if k != "spatial"] and set(a.uns) == {"spatial"}
    del a.uns["spatial"]["s"]["metadata"]["microns_per_pixel"]
    with pytest.raises(ValueError, match="microns per pixel"):
        phg2st.pp.embed_tiles(a, encoder=ColourStats(), mpp=0.5)


@pytest.mark.data
def test_real_tiles_at_the_image_border(c2):
    """Spots moved to the corner of the real C2 image: off-image cells masked, partial tiles padded white."""
    a = c2[:3].copy()
    a.obsm["spatial"] = np.array([[30.0, 40.0], [4000.0, 5000.0], [9270.0, 9900.0]])
    enc = ColourStats()
    phg2st.pp.embed_tiles(a, encoder=enc, grid_size=5, key_added="X_c")
    idx = a.obsm["X_c_neighbours"].reshape(3, 5, 5)
    assert (idx[0, :2] == -1).all() and (idx[0, :, :2] == -1).all() and (idx[0, 2:, 2:] >= 0).all()
    assert (idx[1] >= 0).all()
    assert (idx[2, 3:] == -1).all() and (idx[2, :, 3:] == -1).all()
    full = phg2st.io.read_image(a)
    x0, y0 = np.floor(a.obsm["spatial"][0] - 112 + 0.5).astype(int)  # (-82, -72): partly off the image
    tile = np.full((224, 224, 3), 255, dtype=np.uint8)
    tile[-y0:, -x0:] = full[: 224 + y0, : 224 + x0]
    np.testing.assert_allclose(a.obsm["X_c"][0], enc(normalise(tile)).detach().numpy()[0], rtol=1e-5, atol=1e-5)


def test_reader_survives_pickling(tmp_path):
    """Readers are picklable without their pixels (for data-loader workers started by spawning)."""
    import pickle

    from phg2st_sc.pp._tiles import ImageFile, RegionReader

    a, img = synthetic_section(tmp_path, [[100, 100]])
    reader = RegionReader(ImageFile(tmp_path / "he.png"), img.shape[:2])
    _ = reader.pixels
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._loaded is None
    np.testing.assert_array_equal(clone.read(10, 20, 16), img[20:36, 10:26])


def test_worker_processes_give_the_same_result(tmp_path):
    coords = np.random.default_rng(2).uniform(50, 550, (12, 2))
    a, _ = synthetic_section(tmp_path, coords)
    enc = ColourStats()
    one = phg2st.pp.embed_tiles(a, encoder=enc, tile_size=32, grid_size=3, num_workers=0, copy=True, key_added="X_c")
    two = phg2st.pp.embed_tiles(a, encoder=enc, tile_size=32, grid_size=3, num_workers=2, copy=True, key_added="X_c")
    np.testing.assert_array_equal(one.obsm["X_c"], two.obsm["X_c"])
    np.testing.assert_array_equal(one.uns["X_c"]["tile_embeddings"], two.uns["X_c"]["tile_embeddings"])


def test_tiled_tiff_is_read_lazily_and_embeds_as_the_decoded_image(tmp_path):
    """A tiled (pyramidal) TIFF is read region by region (a lazy array, never the whole slide decoded), with the
    same tiles, padding at its borders included, as the same pixels decoded whole from a PNG; a striped TIFF, which
    has no tiles to read on their own, is decoded whole."""
    import tifffile

    from phg2st_sc._image import open_tiled_tiff
    from phg2st_sc.pp._tiles import ImageFile

    coords = np.random.default_rng(3).uniform(0, 600, (15, 2))  # some tiles off the 600 x 800 image's edges
    a, img = synthetic_section(tmp_path, coords)
    tiff = tmp_path / "he.tif"
    with tifffile.TiffWriter(tiff) as w:  # level 0 in 64-pixel tiles, one half-size level in a sub-IFD
        w.write(img, tile=(64, 64), subifds=1, compression="zlib", photometric="rgb")
        w.write(img[::2, ::2], tile=(64, 64), subfiletype=1, compression="zlib", photometric="rgb")
    tifffile.imwrite(tmp_path / "striped.tif", img, photometric="rgb")
    lazy = ImageFile(tiff)()
    assert not isinstance(lazy, np.ndarray) and lazy.shape == img.shape
    np.testing.assert_array_equal(np.asarray(lazy[100:164, 30:94]), img[100:164, 30:94])
    assert open_tiled_tiff(tmp_path / "striped.tif") is None and open_tiled_tiff(tmp_path / "he.png") is None
    enc = ColourStats()
    want = phg2st.pp.embed_tiles(a, encoder=enc, tile_size=48, grid_size=3, copy=True, key_added="X_c")
    a.uns["spatial"]["s"]["metadata"]["source_image_path"] = str(tiff)
    got = phg2st.pp.embed_tiles(a, encoder=enc, tile_size=48, grid_size=3, copy=True, key_added="X_c")
    np.testing.assert_array_equal(got.obsm["X_c"], want.obsm["X_c"])
    np.testing.assert_array_equal(got.uns["X_c"]["tile_embeddings"], want.uns["X_c"]["tile_embeddings"])
    # forked data-loader workers (the default with a GPU) each read the TIFF through their own handle: through the
    # parent's, their reads interleaved and failed to decode (found on an H200); equal up to float rounding, which
    # depends on the batch size on a GPU
    forked = phg2st.pp.embed_tiles(a, encoder=enc, tile_size=48, grid_size=3, copy=True, key_added="X_c",
                                   num_workers=2, batch_size=4)  # fmt: skip
    np.testing.assert_allclose(forked.uns["X_c"]["tile_embeddings"], want.uns["X_c"]["tile_embeddings"], rtol=1e-5)


def test_a_users_module_is_handed_back_as_it_came(tmp_path):
    # the module runs in eval mode, but the caller's train/eval flags (a frozen submodule included) are restored
    a, _ = synthetic_section(tmp_path, [[20, 30], [400, 300], [790, 590]])
    enc = ColourStats()
    enc.frozen = nn.BatchNorm1d(3).eval()  # a submodule the caller keeps in eval mode inside a training module
    assert enc.training and not enc.frozen.training
    phg2st.pp.embed_tiles(a, encoder=enc, tile_size=64, grid_size=3, key_added="X_c", device="cpu")
    assert enc.training and not enc.frozen.training
    assert enc.scale.device.type == "cpu"
    # a failing encoder is handed back too
    dying = ColourStats(die_after=1)  # the dry run passes, the first batch fails
    with pytest.raises(KeyboardInterrupt):
        phg2st.pp.embed_tiles(a, encoder=dying, tile_size=64, grid_size=3, key_added="X_d", device="cpu")
    assert dying.training and "X_d" not in a.obsm


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cpu_module_embedded_on_the_gpu_stays_on_the_cpu(tmp_path):
    a, _ = synthetic_section(tmp_path, [[20, 30], [400, 300], [790, 590]])
    enc = ColourStats()
    phg2st.pp.embed_tiles(a, encoder=enc, tile_size=64, grid_size=3, key_added="X_c", device="cuda")
    assert enc.scale.device.type == "cpu" and a.uns["X_c"]["params"]["device"].startswith("cuda")


def test_a_module_with_batch_norm_is_fingerprinted():
    # BatchNorm keeps a 0-d counter in its state dict (num_batches_tracked): the fingerprint read it as bytes and
    # failed for any such module (a torchvision ResNet passed as the encoder, for one)
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    model.fc = nn.Identity()
    enc = get_encoder(model, input_size=32)
    assert enc.dim == 512 and len(enc.fingerprint) == 32
    model.bn1.num_batches_tracked += 1  # the counter is part of the identity, as every other tensor is
    assert get_encoder(model, input_size=32).fingerprint != enc.fingerprint


def test_fp32_on_a_gpu_is_plain_float32_for_the_call():
    # cuDNN's convolutions run in TF32 by default on recent GPUs (features moved by ~1% on an H200): "fp32" turns it
    # off for the call only, and touches nothing on the CPU or in the reduced precisions
    from phg2st_sc._model._embed import ieee_fp32

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = (conv.fp32_precision, matmul.fp32_precision)
    with ieee_fp32(torch.device("cuda"), "fp32"):
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
    for dev, prec in ((torch.device("cpu"), "fp32"), (torch.device("cuda"), "bf16")):
        with ieee_fp32(dev, prec):
            assert (conv.fp32_precision, matmul.fp32_precision) == before
    with pytest.raises(RuntimeError), ieee_fp32(torch.device("cuda"), "fp32"):
        raise RuntimeError("the encoder failed")
    assert (conv.fp32_precision, matmul.fp32_precision) == before


def test_devices_this_machine_lacks_are_refused():
    """A device string is parsed and checked to exist here; 'auto' always resolves (embedding and prediction)."""
    from phg2st_sc._model._embed import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    with pytest.raises(ValueError, match="Unknown device 'tpu9'"):
        resolve_device("tpu9")
    with pytest.raises(ValueError, match="CUDA GPU"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")  # one past the last GPU, or any where there is none
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="has none that torch can use"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="has none"):
            resolve_device(torch.device("cuda"))
    if not (torch.backends.mps.is_available()):
        with pytest.raises(ValueError, match="MPS"):
            resolve_device("mps")
