"""The Flax FID Inception reproduces pytorch-fid's ``InceptionV3([3])``.

The real weights cannot be downloaded here, so both networks get the same deterministic
random weights (BatchNorm running statistics included), converted by the same path as
``tools/convert_inception_weights.py``. Needs torch, torchvision and pytorch-fid (the
``[test]`` extra); skipped only when they are not installed.
"""
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

from collapse_jax.metrics import inception

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Relative to the largest feature magnitude; float32 through ~50 layers stays well below.
PORT_TOLERANCE = 1e-4


def _import_pytorch_fid_inception():
  """``pytorch_fid.inception``, or a skip naming what is not installed."""
  torch = pytest.importorskip("torch", reason="torch is not installed (the [test] extra)")
  try:
    import torchvision  # noqa: F401
  except ImportError:
    pytest.skip("torchvision is not installed (the [test] extra)", allow_module_level=True)
  except RuntimeError as error:
    if "torchvision::" not in str(error):
      raise
    # PyPI's torchvision wheels link against CUDA torch, so beside the CPU torch build
    # their C ops fail to load, and torchvision's unguarded fake-kernel registrations for
    # nms/qnms then abort its import. The FID network uses no torchvision C op: declaring
    # those two schemas lets the pure-Python model code import.
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
      del sys.modules[name]
    torch.library.define("torchvision::nms",
                         "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    torch.library.define("torchvision::qnms",
                         "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401
  return pytest.importorskip("pytorch_fid.inception",
                             reason="pytorch-fid is not installed (the [test] extra)")


# Imported by _torch when this module's tests run, not when pytest collects them (torch and
# torchvision take seconds to import, on every xdist worker).
fid_inception = torch = torchvision = None


@pytest.fixture(scope="module", autouse=True)
def _torch():
  global fid_inception, torch, torchvision  # pylint: disable=global-statement
  fid_inception = _import_pytorch_fid_inception()
  torch, torchvision = sys.modules["torch"], sys.modules["torchvision"]


def _random_state_dict(seed: int) -> dict:
  """A state dict for pytorch-fid's network with every weight and running stat random.

  The FID blocks subclass torchvision's without changing any layer, so torchvision's
  untrained Inception-v3 has exactly the names and shapes of the FID weights file.
  """
  template = torchvision.models.inception_v3(
      weights=None, aux_logits=False, num_classes=1008, init_weights=False).state_dict()
  rng = np.random.default_rng(seed)
  state = {}
  for name, value in template.items():
    shape = tuple(value.shape)
    if name.endswith("num_batches_tracked"):
      state[name] = value
      continue
    if name.endswith("conv.weight") or name == "fc.weight":
      # He scaling keeps activations O(1) through the depth, so the comparison is of
      # meaningful numbers rather than of overflow or zeros.
      fan_in = int(np.prod(shape[1:]))
      array = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif name.endswith("running_var") or name.endswith("bn.weight"):
      array = rng.uniform(0.5, 1.5, shape)
    else:  # bn.bias, bn.running_mean, fc.bias
      array = rng.normal(0.0, 0.1, shape)
    state[name] = torch.from_numpy(array.astype(np.float32))
  return state


def _convert_with_tool(state_dict: dict, tmp_path: pathlib.Path) -> dict:
  """Runs tools/convert_inception_weights.py on a saved state dict and loads the result."""
  spec = importlib.util.spec_from_file_location(
      "convert_inception_weights", ROOT / "tools" / "convert_inception_weights.py")
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  pth, npz = tmp_path / "weights.pth", tmp_path / "weights.npz"
  torch.save(state_dict, pth)
  tool.main([str(pth), str(npz)])
  return inception.load_params(npz)


@pytest.mark.parametrize("height,width", [(37, 53), (320, 450)])
def test_resize_matches_torch_bilinear(height, width):
  images = np.random.default_rng(1).uniform(size=(2, height, width, 3)).astype(np.float32)
  expected = torch.nn.functional.interpolate(
      torch.from_numpy(images).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear",
      align_corners=False).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(inception.resize_bilinear(images), expected, atol=1e-6)


def test_features_match_pytorch_fid(tmp_path, monkeypatch):
  state_dict = _random_state_dict(seed=0)
  # pytorch-fid downloads its weights inside fid_inception_v3; hand it ours instead.
  monkeypatch.setattr(fid_inception, "load_state_dict_from_url",
                      lambda *args, **kwargs: state_dict)
  model = fid_inception.InceptionV3([3], resize_input=True, normalize_input=True,
                                    use_fid_inception=True).eval()
  # A small input still goes through the resize to 299x299.
  images = np.random.default_rng(2).uniform(size=(2, 37, 53, 3)).astype(np.float32)
  with torch.no_grad():
    (expected,) = model(torch.from_numpy(images).permute(0, 3, 1, 2))
  expected = expected[:, :, 0, 0].numpy()

  params = _convert_with_tool(state_dict, tmp_path)
  features = np.asarray(inception.inception_features(2.0 * images - 1.0, params))

  assert features.shape == (2, inception.FEATURE_DIM)
  scale = np.abs(expected).max()
  assert scale > 1e-2, "random weights should give non-degenerate features"
  relative = np.abs(features - expected).max() / scale
  print(f"port max |diff| = {np.abs(features - expected).max():.3e}, "
        f"feature scale {scale:.3e}, relative {relative:.3e}")
  assert relative <= PORT_TOLERANCE


def test_extractor_batches_like_single_call(tmp_path):
  params = _convert_with_tool(_random_state_dict(seed=3), tmp_path)
  extractor = inception.FidFeatureExtractor.from_env(tmp_path / "weights.npz")
  assert extractor.available
  images = np.random.default_rng(4).uniform(-1.0, 1.0, size=(3, 37, 53, 3))
  images = images.astype(np.float32)
  batched = extractor(images, batch_size=2)
  # Pairs of images only, so every call reuses the port test's compiled shape.
  expected = np.concatenate([inception.inception_features(images[:2], params),
                             inception.inception_features(images[1:], params)[1:]])
  np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
