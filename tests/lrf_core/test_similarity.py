import numpy as np
import pytest

from lrf_core.errors import LRFError
from lrf_core.similarity import feature_similarity, linear_cka


def test_cka_is_one_for_identical_and_invariant_to_rotation_and_scale(rng):
    x = rng.normal(size=(40, 12))
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)


def test_cka_feature_and_gram_forms_agree(rng):
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    wide_x, wide_y = np.repeat(x, 5, axis=1), np.repeat(y, 5, axis=1)  # 40 features > 30 examples
    narrow = linear_cka(x, y)
    # same CKA: repeating features scales both Gram matrices identically
    assert linear_cka(wide_x, wide_y) == pytest.approx(narrow, rel=1e-10)
    assert 0 <= narrow < 0.6  # independent noise is far from 1


def test_similarity_decreases_with_noise(rng):
    x = rng.normal(size=(64, 4, 4, 3))
    scores = {m: [feature_similarity(x, x + s * rng.normal(size=x.shape), m) for s in (0.0, 0.1, 1.0)]
              for m in ("cka", "cosine", "mse")}
    for metric, values in scores.items():
        assert values[0] == pytest.approx(1.0), metric
        assert values[0] > values[1] > values[2], (metric, values)


def test_unknown_metric_lists_the_allowed_ones(rng):
    x = rng.normal(size=(4, 3))
    with pytest.raises(LRFError, match="Allowed: cka, cosine, mse"):
        feature_similarity(x, x, "l2")


@pytest.mark.parametrize("metric", ["cka", "cosine", "mse"])
@pytest.mark.parametrize("features", [6, 300])  # feature form (p < N) and Gram form
def test_a_prepared_reference_scores_like_the_plain_function(rng, metric, features):
    from lrf_core.similarity import similarity_to

    reference = rng.normal(size=(40, features))
    score = similarity_to(reference, metric)
    for noise in (0.0, 0.3, 3.0):  # the prepared side is reused across candidates
        candidate = reference + noise * rng.normal(size=reference.shape)
        assert score(candidate) == pytest.approx(feature_similarity(reference, candidate, metric), rel=1e-12, abs=1e-12)
