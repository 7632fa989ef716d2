"""Wording of numbers in messages: a count with its noun in the right number ("1 class",
"2 classes"), and a value shown with enough digits to tell which side of a threshold it is on."""
import math
from typing import Optional

_MAX_DIGITS = 12


def plural(count: float, noun: str, many: Optional[str] = None) -> str:
    """`count` and `noun`, singular for exactly 1: "1 class", "0 classes", "3 boxes". The plural
    is `many` when given, else English's regular one: +es after s, x, z, ch, sh ("classes",
    "boxes"), y after a consonant to ies ("categories"), else +s ("images")."""
    return f"{count} {noun if count == 1 else (many or _regular_plural(noun))}"


def _regular_plural(noun: str) -> str:
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        return noun[:-1] + "ies"
    return noun + "s"


def beside_threshold(value: float, threshold: float, digits: int = 2) -> str:
    """`value` with `digits` decimals, or more when fewer would print a value on the other side
    of `threshold` or equal to it: an IoU of 0.4959 against 0.5 reads "0.496", not "0.50"; one
    exactly at the threshold reads as the threshold does ("0.50")."""
    if not (math.isfinite(value) and math.isfinite(threshold)) or value == threshold:
        return f"{value:.{digits}f}"
    for n in range(digits, _MAX_DIGITS + 1):
        shown = float(f"{value:.{n}f}")
        if (shown < threshold) == (value < threshold) and shown != threshold:
            return f"{value:.{n}f}"
    return repr(value)
