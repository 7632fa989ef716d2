"""gn_det.utils.text: counts read "1 class" / "2 classes", and a value shown against a threshold
prints the digits it takes to tell which side of it the value is on."""
import pytest

from gn_det.utils.text import beside_threshold, plural


@pytest.mark.parametrize("count, noun, text", [
    (1, "class", "1 class"), (0, "class", "0 classes"), (2, "class", "2 classes"),
    (1, "box", "1 box"), (4, "box", "4 boxes"), (3, "image", "3 images"),
    (2, "category", "2 categories"), (2, "key", "2 keys"), (5, "batch", "5 batches"),
    (1, "empty box", "1 empty box"), (2, "empty box", "2 empty boxes"),
])
def test_plural(count, noun, text):
    assert plural(count, noun) == text


def test_plural_irregular():
    assert plural(2, "child", "children") == "2 children" and plural(1, "child", "x") == "1 child"


@pytest.mark.parametrize("value, threshold, text", [
    (0.4959, 0.5, "0.496"),   # "0.50" would read as a match at IoU 0.5
    (0.5004, 0.5, "0.5004"),  # "0.50" and "0.500" read as exactly the threshold
    (0.5, 0.5, "0.50"),       # at the threshold: shown as it
    (0.72, 0.5, "0.72"),      # far from it: two decimals
    (0.4999999999999, 0.5, "0.4999999999999"),
    (0.5541, 0.554, "0.5541"),  # a score kept at >= 0.554 must not read "0.55"
    (0.7549, 0.75, "0.755"),
])
def test_beside_threshold_shows_the_side(value, threshold, text):
    assert beside_threshold(value, threshold) == text
    shown = float(text)
    assert (shown < threshold) == (value < threshold) and (shown == threshold) == (
        value == threshold)


def test_beside_threshold_digits_and_nan():
    assert beside_threshold(0.123456, 0.9, digits=3) == "0.123"
    assert beside_threshold(float("nan"), 0.5) == "nan"
