"""segment_image: grey, RGB and RGBA images, uint8 and float."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from gaussmix import GaussianMixture, Segmentation, segment_image

RED, BLUE = np.array([0.85, 0.15, 0.1]), np.array([0.1, 0.2, 0.8])


def _two_colour_image(height=24, width=32, seed=0):
    """Left third red, the rest blue, with a little noise: (image, truth)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), dtype=int)
    truth[:, width // 3 :] = 1
    image = np.where(truth[:, :, None] == 0, RED, BLUE)
    image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    return image, truth


def test_rgb_float_image_is_split_by_colour():
    image, truth = _two_colour_image()
    result = segment_image(image, 2, random_state=0)
    assert isinstance(result, Segmentation)
    assert result.labels.shape == truth.shape
    assert result.probabilities.shape == (*truth.shape, 2)
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) == 1.0
    np.testing.assert_allclose(result.probabilities.sum(axis=2), 1.0)
    np.testing.assert_array_equal(result.labels, result.probabilities.argmax(axis=2))
    assert result.image.shape == image.shape and result.image.dtype == image.dtype
    # Recoloured by the component means: red where red was.
    red_label = result.labels[0, 0]
    np.testing.assert_allclose(result.image[0, 0], RED, atol=0.02)
    np.testing.assert_array_equal(
        result.image[result.labels == red_label],
        np.broadcast_to(result.model.means_[red_label], (np.sum(truth == 0), 3)),
    )


def test_uint8_image_is_scaled_and_recoloured_in_uint8():
    image, truth = _two_colour_image()
    pixels = np.round(image * 255).astype(np.uint8)
    result = segment_image(pixels, 2, random_state=0)
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) == 1.0
    assert result.image.dtype == np.uint8
    # The model's features are colours in [0, 1].
    assert np.all((result.model.means_ >= 0) & (result.model.means_ <= 1))
    assert len(np.unique(result.image.reshape(-1, 3), axis=0)) == 2


def test_same_as_a_mixture_of_the_pixels():
    image, _ = _two_colour_image(seed=3)
    result = segment_image(image, 3, max_samples=None, random_state=0)
    pixels = image.reshape(-1, 3)
    model = GaussianMixture(3, reg_covar=1e-4, random_state=0).fit(pixels)
    np.testing.assert_array_equal(result.labels.ravel(), model.predict(pixels))
    np.testing.assert_allclose(
        result.probabilities.reshape(-1, 3), model.predict_proba(pixels)
    )


@pytest.mark.parametrize("shape", [(24, 32), (24, 32, 1)])
def test_grey_images(shape):
    _, truth = _two_colour_image()
    rng = np.random.default_rng(2)
    grey = np.where(truth == 0, 0.25, 0.7) + rng.normal(0, 0.03, truth.shape)
    pixels = np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8).reshape(shape)
    result = segment_image(pixels, 2, random_state=0)
    assert result.model.means_.shape == (2, 1)
    assert adjusted_rand_score(truth.ravel(), result.labels.ravel()) == 1.0
    assert result.image.shape == shape and result.image.dtype == np.uint8


def test_rgba_alpha_is_a_mask():
    image, truth = _two_colour_image()
    alpha = np.ones(truth.shape)
    alpha[:4] = 0.0  # a transparent band of a third, green colour
    image[:4] = [0.1, 0.9, 0.1]
    rgba = np.concatenate([image, alpha[:, :, None]], axis=2)
    result = segment_image(rgba, 2, random_state=0)
    assert np.all(result.labels[:4] == -1)
    assert np.all(result.probabilities[:4] == 0)
    opaque = alpha > 0
    assert adjusted_rand_score(truth[opaque], result.labels[opaque]) == 1.0
    # Alpha and the transparent pixels' colours are kept.
    np.testing.assert_array_equal(result.image[:, :, 3], alpha)
    np.testing.assert_allclose(result.image[:4, :, :3], image[:4])
    # Without the mask the green band would need its own component.
    assert not np.any(np.all(np.abs(result.model.means_ - [0.1, 0.9, 0.1]) < 0.1, 1))


def test_position_separates_regions_of_the_same_colour():
    rng = np.random.default_rng(1)
    image = np.clip(0.5 + rng.normal(0, 0.05, (20, 40, 3)), 0, 1)
    truth = np.zeros((20, 40), dtype=int)
    truth[:, 20:] = 1
    by_colour = segment_image(image, 2, random_state=0)
    by_position = segment_image(
        image, 2, use_position=True, position_weight=2.0, random_state=0
    )
    assert by_position.model.means_.shape == (2, 5)
    assert adjusted_rand_score(truth.ravel(), by_position.labels.ravel()) > 0.9
    assert adjusted_rand_score(truth.ravel(), by_colour.labels.ravel()) < 0.2


def test_subsampled_fit_is_reproducible():
    image, truth = _two_colour_image(48, 64)
    a = segment_image(image, 2, max_samples=300, random_state=4)
    b = segment_image(image, 2, max_samples=300, random_state=4)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert adjusted_rand_score(truth.ravel(), a.labels.ravel()) == 1.0


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 2)), "C = 1 \\(grey\\), 3 \\(RGB\\) or 4 \\(RGBA\\)"),
        (np.zeros((2, 4, 4, 3)), "got shape"),
        (np.zeros(16), "got shape"),
        (np.zeros((4, 4, 3), dtype=np.int64), "dtype int64 is not supported"),
        (np.zeros((4, 4), dtype=bool), "dtype bool is not supported"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.zeros((0, 4, 3)), "empty"),
        (np.zeros((1, 1, 3)), "usable pixels"),
    ],
)
def test_bad_images(image, message):
    with pytest.raises(ValueError, match=message):
        segment_image(image, 2)


def test_bad_arguments():
    image, _ = _two_colour_image()
    with pytest.raises(ValueError, match="n_components must be an integer"):
        segment_image(image, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_samples"):
        segment_image(image, 2, max_samples=0)
    with pytest.raises(ValueError, match="position_weight"):
        segment_image(image, 2, position_weight=-1)
    with pytest.raises(ValueError, match="usable pixels"):
        rgba = np.zeros((4, 4, 4))  # fully transparent
        segment_image(rgba, 2)
