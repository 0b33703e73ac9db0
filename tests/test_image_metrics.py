"""Frechet distance, improved precision/recall, and finding the FID Inception weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import traverse_util

from collapse_jax.metrics import frechet, inception, precision_recall

# ---- Frechet distance ---------------------------------------------------------------


def _diagonal_closed_form(mu1, s1, mu2, s2):
  return np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))


def _random_covariance(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


@pytest.mark.parametrize("n,d", [(500, 16), (20, 64)])  # (20, 64): singular covariance
def test_frechet_of_a_set_with_itself_is_zero(n, d):
  features = np.random.default_rng(0).normal(3.0, 2.0, size=(n, d))
  mu, sigma = frechet.feature_statistics(features)
  distance = frechet.frechet_distance(mu, sigma, mu, sigma)
  assert 0.0 <= distance < 1e-6 * 2 * np.trace(sigma)


def test_frechet_matches_closed_form_for_diagonal_covariances():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  s1, s2 = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
  distance = frechet.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
  np.testing.assert_allclose(distance, _diagonal_closed_form(mu1, s1, mu2, s2), rtol=1e-12)


def test_frechet_matches_sqrtm_formula_for_full_covariances():
  rng = np.random.default_rng(2)
  mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
  sigma1, sigma2 = _random_covariance(rng, 10), _random_covariance(rng, 10)
  # The textbook formula pytorch-fid evaluates; fine on well-conditioned covariances.
  expected = (np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
              - 2.0 * np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2).real))
  np.testing.assert_allclose(frechet.frechet_distance(mu1, sigma1, mu2, sigma2), expected,
                             rtol=1e-9)


def test_frechet_of_large_samples_approaches_closed_form():
  rng = np.random.default_rng(3)
  mu1, mu2 = np.zeros(4), np.array([1.0, -0.5, 0.0, 2.0])
  s1, s2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.5, 2.0, 1.5, 3.0])
  x1 = mu1 + np.sqrt(s1) * rng.normal(size=(200_000, 4))
  x2 = mu2 + np.sqrt(s2) * rng.normal(size=(200_000, 4))
  distance = frechet.frechet_distance(*frechet.feature_statistics(x1),
                                      *frechet.feature_statistics(x2))
  np.testing.assert_allclose(distance, _diagonal_closed_form(mu1, s1, mu2, s2), rtol=2e-2)


def test_feature_statistics_are_unbiased_mean_and_covariance():
  features = np.random.default_rng(4).normal(size=(50, 3))
  mu, sigma = frechet.feature_statistics(features)
  np.testing.assert_allclose(mu, features.mean(axis=0))
  centred = features - mu
  np.testing.assert_allclose(sigma, centred.T @ centred / 49)


def test_frechet_of_diverged_samples_is_nan_not_a_linalg_error():
  """A diverged model's features (nan, or so large their product overflows) give nan, which
  the driver names as a non-finite metric, instead of LAPACK's LinAlgError."""
  mu, sigma = np.zeros(3), np.eye(3)
  assert np.isnan(frechet.frechet_distance(mu, sigma, mu + np.nan, sigma + np.nan))
  assert np.isnan(frechet.frechet_distance(mu, sigma * 1e200, mu, sigma * 1e200))


def test_frechet_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="covariances"):
    frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
  with pytest.raises(ValueError, match="features"):
    frechet.feature_statistics(np.zeros((1, 3)))


# ---- Improved precision and recall ---------------------------------------------------


def _brute_force_precision_recall(real, fake, k):
  def sq_dists(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

  real_radii = np.sort(sq_dists(real, real), axis=1)[:, k]
  fake_radii = np.sort(sq_dists(fake, fake), axis=1)[:, k]
  precision = (sq_dists(fake, real) <= real_radii[None, :]).any(axis=1).mean()
  recall = (sq_dists(real, fake) <= fake_radii[None, :]).any(axis=1).mean()
  return precision, recall


def test_identical_sets_have_full_precision_and_recall():
  features = np.random.default_rng(5).normal(size=(300, 8))
  result = precision_recall.precision_recall(features, features)
  assert (result.precision, result.recall) == (1.0, 1.0)


def test_far_apart_sets_have_zero_precision_and_recall():
  rng = np.random.default_rng(6)
  real, fake = rng.normal(size=(200, 8)), rng.normal(size=(150, 8)) + 100.0
  result = precision_recall.precision_recall(real, fake)
  assert (result.precision, result.recall) == (0.0, 0.0)


def test_subset_of_real_has_full_precision():
  real = np.random.default_rng(7).normal(size=(400, 8))
  assert precision_recall.precision_recall(real, real[:60]).precision == 1.0


def test_precision_recall_on_a_grid_with_outlier_clusters():
  # Real: integers 0..49 on a line plus 4 coincident points at -1000; fake: midpoints
  # 0.5..48.5 plus 10 coincident points at +1000. A coincident cluster has k-NN radius 0
  # and covers nothing else; grid radii (>= 2 at k = 3) reach the other grid's points,
  # which are 0.5 away; the clusters are nowhere near anything of the other set.
  real = np.concatenate([np.arange(50.0), np.full(4, -1000.0)])[:, None]
  fake = np.concatenate([np.arange(49.0) + 0.5, np.full(10, 1000.0)])[:, None]
  result = precision_recall.precision_recall(real, fake, k=3)
  assert result.precision == pytest.approx(49 / 59)
  assert result.recall == pytest.approx(50 / 54)


def test_tiled_computation_matches_brute_force():
  rng = np.random.default_rng(8)
  real, fake = rng.normal(size=(57, 5)), rng.normal(0.3, 1.2, size=(43, 5))
  expected = _brute_force_precision_recall(real, fake, k=3)
  # Tiles that divide neither set size, so padding is exercised on rows and columns.
  tiled = precision_recall.precision_recall(real, fake, k=3, row_batch=8, col_batch=5)
  whole = precision_recall.precision_recall(real, fake, k=3)
  assert (tiled.precision, tiled.recall) == pytest.approx(expected)
  assert (whole.precision, whole.recall) == pytest.approx(expected)
  assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0
  # The real balls computed once and passed in give exactly the same answer.
  radii = precision_recall.knn_sq_radii(real, k=3)
  assert precision_recall.precision_recall(real, fake, k=3, real_sq_radii=radii) == whole


def test_knn_radii_match_brute_force():
  features = np.random.default_rng(9).normal(size=(37, 6))
  sq = ((features[:, None] - features[None]) ** 2).sum(-1)
  expected = np.sqrt(np.sort(sq, axis=1)[:, 3])
  radii = precision_recall.knn_radii(features, k=3, row_batch=10, col_batch=7)
  np.testing.assert_allclose(radii, expected, rtol=1e-4)


def test_precision_recall_rejects_k_not_below_set_size():
  features = np.zeros((3, 2))
  with pytest.raises(ValueError, match="k must be"):
    precision_recall.precision_recall(features, features, k=3)


# ---- Finding the FID Inception weights -----------------------------------------------


def _zero_weights(path):
  """Writes an all-zero ``.npz`` with every variable the network expects."""
  shapes = jax.eval_shape(inception.FIDInceptionV3().init, jax.random.PRNGKey(0),
                          jnp.zeros((1, inception.INPUT_SIZE, inception.INPUT_SIZE, 3)))
  flat = {"/".join(k): np.zeros(v.shape, np.float32)
          for k, v in traverse_util.flatten_dict(shapes).items()}
  inception.save_params(path, flat)
  return flat


def test_extractor_without_weights_is_unavailable_and_says_why(monkeypatch):
  monkeypatch.delenv(inception.WEIGHTS_ENV_VAR, raising=False)
  extractor = inception.FidFeatureExtractor.from_env()
  assert not extractor.available
  assert inception.WEIGHTS_ENV_VAR in extractor.reason
  assert extractor.reason.count(". ") == 0 and extractor.reason.endswith(".")
  with pytest.raises(inception.InceptionWeightsUnavailable, match="unavailable"):
    extractor(np.zeros((1, 8, 8, 3)))


def test_extractor_with_missing_file_is_unavailable(tmp_path, monkeypatch):
  missing = tmp_path / "absent.npz"
  monkeypatch.setenv(inception.WEIGHTS_ENV_VAR, str(missing))
  extractor = inception.FidFeatureExtractor.from_env()
  assert not extractor.available and str(missing) in extractor.reason


def test_extractor_loads_weights_from_env(tmp_path, monkeypatch):
  path = tmp_path / "weights.npz"
  _zero_weights(path)
  monkeypatch.setenv(inception.WEIGHTS_ENV_VAR, str(path))
  extractor = inception.FidFeatureExtractor.from_env()
  assert extractor.available and extractor.reason == ""
  assert set(extractor.params) == {"params", "batch_stats"}


def test_load_params_rejects_incomplete_weights(tmp_path):
  flat = _zero_weights(tmp_path / "full.npz")
  del flat["params/Mixed_7c/branch_pool/conv/kernel"]
  inception.save_params(tmp_path / "partial.npz", flat)
  with pytest.raises(ValueError, match="missing"):
    inception.load_params(tmp_path / "partial.npz")


def test_convert_rejects_unknown_variables():
  with pytest.raises(ValueError, match="Unexpected variable"):
    inception.convert_state_dict({"Mixed_5b.branch1x1.linear.weight": np.zeros((1, 1))})


def test_feature_classifier_is_trained_once_per_data_and_settings(tmp_path, monkeypatch):
  """The second run's classifier comes from the shared cache, bitwise the first's; other
  settings train their own."""
  from collapse_jax.metrics import classifier
  monkeypatch.setenv("COLLAPSE_JAX_CLASSIFIERS", str(tmp_path / "shared"))
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (64, 8, 8, 1)).astype(np.float32)
  labels = np.arange(64, dtype=np.int32) % 4
  trained = []
  monkeypatch.setattr(classifier, "train_classifier",
                      lambda *a, _train=classifier.train_classifier, **k:
                      trained.append(1) or _train(*a, **k))
  first, _ = classifier.load_or_train(tmp_path / "a.npz", images, labels, 0, 3)
  second, _ = classifier.load_or_train(tmp_path / "b.npz", images, labels, 0, 3)
  assert len(trained) == 1 and (tmp_path / "b.npz").exists()
  for a, b in zip(first(images), second(images)):  # features, logits
    np.testing.assert_array_equal(a, b)
  classifier.load_or_train(tmp_path / "c.npz", images, labels, 1, 3)  # another seed
  assert len(trained) == 2


def test_classifiers_of_one_shape_share_one_compiled_program(tmp_path, monkeypatch):
  """A classifier's weights are arguments of its program, not constants in it (XLA folds
  constant weights through the convolutions' transforms at every compile): a second
  classifier, other weights of the same shapes, compiles nothing."""
  from collapse_jax.metrics import classifier
  monkeypatch.setenv("COLLAPSE_JAX_CLASSIFIERS", str(tmp_path / "shared"))
  images = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32)
  labels = np.arange(16, dtype=np.int32) % 4
  first, _ = classifier.load_or_train(tmp_path / "a.npz", images, labels, 0, 2)
  second, _ = classifier.load_or_train(tmp_path / "b.npz", images, labels, 1, 2)
  first_features = np.asarray(first(images)[0])
  compiles = []
  listen = lambda event, _, **kw: (compiles.append(event)
                                   if event == "/jax/core/compile/backend_compile_duration"
                                   else None)
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    second_features = np.asarray(second(images)[0])
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert not compiles
  assert not np.array_equal(first_features, second_features)  # the weights did differ
