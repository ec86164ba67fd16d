"""What to expect before training: the expected test-accuracy range of each strategy kind, from a small model fitted on
the validation sweeps (`python -m tlcore recommend --validate`, see validate.py: `fit_calibration`).

Accuracy is measured above chance and on the logit scale,
    z(acc) = logit((acc - chance) / (1 - chance)),
so every range lies inside [chance, 1] and narrows near the top. For each strategy kind
    measured:   z(acc) = z(linear-probe val accuracy) + offset + slope * log10(images per class)
                         + weight * similarity
    described:  the same, with z(linear probe) itself predicted from log10(images per class) and the similarity
                typed in
and the range is the prediction plus the most extreme residuals of the fit (a split-conformal rank for 80% coverage;
wider in describe mode, where nothing was measured). Sizes are clamped to 1-1000 a class and similarities to the
range of the fit; outside the sizes and similarities validated, the basis says so.
"""

from __future__ import annotations

import numpy as np

COMPARE_PRESET = "default"  # the schedules the expectations are for: what Compare and `compare` run by default
CALIBRATION_KINDS = ("feature-extraction", "fine-tune", "scratch")
_EPS = 0.005  # accuracies within half a point of chance or of 1 are clipped there before the logit
# Feature extraction is recommended where fine-tune's expected gain over it is below this: within a point, the
# strategy that trains in a fraction of the time (validate.compare_rules measures what the rule costs and saves).
COST_MARGIN = 0.01

# Fitted by `validate.fit_calibration` (target 0.8) on the cases of `python -m tlcore recommend --validate --json
# validation.json` (kept as docs/validation/recommend-validate.json): the built-in suite, 5 datasets x 5, 20, 100 a
# class, the comparison's default schedules (COMPARE_PRESET, what Compare runs), 1 seed a case,
# tf_efficientnet_lite0 with its packaged ImageNet weights, CPU. Refit with `fit_calibration(cases)` and replace this
# literal when the suite, the comparison's schedules or the strategies change; tests/test_recommend.py checks that
# the literal is the fit of that file.
CALIBRATION: dict = {
    "source": "python -m tlcore recommend --validate (built-in suite, the comparison's default schedules, 1 seed), "
              "validate.fit_calibration, 2026-12-07",
    "fitted_on": ["digits", "digits:3|5|8", "fashion-mnist", "fashion-mnist:Sandal|Sneaker|Ankle boot",
                  "fashion-mnist:T-shirt/top|Pullover|Coat|Shirt"],
    "sizes": [5, 100],  # images per class in the fit
    "similarities": [0.05, 0.58],  # measured similarities in the fit
    "cases": 15,
    "target": 0.8,
    # describe mode: z(linear probe) = intercept + log10_n * log10(n) + similarity * s (a negative fitted weight of
    # the similarity, which easy far datasets such as digits produce, is held at 0)
    "linear_probe": {"intercept": -0.864, "log10_n": 1.431, "similarity": 0.0},
    "strategies": {
        "feature-extraction": {"offset": 0.123, "log10_n": -0.117, "similarity": -0.227,
                               "measured": [-0.22, 0.21], "described": [-1.508, 1.025]},
        "fine-tune": {"offset": 1.201, "log10_n": -0.339, "similarity": -1.564,
                      "measured": [-0.352, 0.337], "described": [-1.555, 1.398]},
        "scratch": {"offset": 1.402, "log10_n": -0.197, "similarity": -2.796,
                    "measured": [-0.919, 0.521], "described": [-1.757, 1.336]},
    },
    # measured training seconds over the time estimate stated before training (tlcore.experiments.estimate on this
    # machine's rates), the band that covers the target share: the stated time range is estimate x [low, high]
    "seconds": {"feature-extraction": [0.36, 2.74], "fine-tune": [0.59, 1.13], "scratch": [0.66, 2.07]},
    # share of the suite's (dataset, size) cases inside the stated range (rounded outwards to 2 decimals, as shown),
    # per strategy: in-sample, and refitted without each dataset in turn (`recommend --validate` prints both)
    "coverage": {
        "in_sample": {"measured": {"feature-extraction": 1.0, "fine-tune": 1.0, "scratch": 1.0},
                      "described": {"feature-extraction": 1.0, "fine-tune": 1.0, "scratch": 1.0}},
        "leave_one_dataset_out": {
            "measured": {"feature-extraction": 0.933, "fine-tune": 0.8, "scratch": 0.8},
            "described": {"feature-extraction": 0.8, "fine-tune": 0.733, "scratch": 0.733}},
    },
}


def accuracy_logit(accuracy: float, chance: float) -> float:
    """z(acc): accuracy above chance, 0-1, on the logit scale (clipped half a point from both ends)."""
    p = float(np.clip((accuracy - chance) / max(1.0 - chance, 1e-9), _EPS, 1.0 - _EPS))
    return float(np.log(p / (1.0 - p)))


def logit_accuracy(z: float, chance: float) -> float:
    """The inverse of `accuracy_logit`."""
    return float(chance + (1.0 - chance) / (1.0 + np.exp(-z)))


def size_feature(images_per_class: float) -> float:
    """log10 of images per class, clamped to 1-1000 a class."""
    return float(np.log10(np.clip(images_per_class, 1.0, 1000.0)))


def expected_accuracy(kind: str, images_per_class: float, classes: int, linear_probe: float | None = None,
                      similarity: float = 0.5, calibration: dict | None = None) -> tuple[float, float, float]:
    """(low, high, central) expected test accuracy of a strategy kind, before training: from the measured
    linear-probe val accuracy when there is one, else (describe mode) from the size and similarity alone."""
    cal = calibration or CALIBRATION
    chance = 1.0 / max(int(classes), 2)
    x = size_feature(images_per_class)
    similarity = float(np.clip(similarity, *cal.get("similarities", (0.0, 1.0))))
    m = cal["strategies"][kind]
    if linear_probe is not None:
        z, (lo, hi) = accuracy_logit(linear_probe, chance), m["measured"]
    else:
        p = cal["linear_probe"]
        z, (lo, hi) = p["intercept"] + p["log10_n"] * x + p["similarity"] * similarity, m["described"]
    z += m["offset"] + m["log10_n"] * x + m.get("similarity", 0.0) * similarity
    return logit_accuracy(z + lo, chance), logit_accuracy(z + hi, chance), logit_accuracy(z, chance)


def outward(low: float, high: float, decimals: int = 2) -> tuple[float, float]:
    """A range rounded outwards to the decimals shown, so what is shown is what is stated and an accuracy on the edge
    of the fitted range stays inside."""
    scale = 10 ** decimals
    return (float(np.floor(round(low * scale, 6)) / scale), float(np.ceil(round(high * scale, 6)) / scale))


def expected_gain(images_per_class: float, classes: int, linear_probe: float | None = None, similarity: float = 0.5,
                  calibration: dict | None = None) -> float:
    """Fine-tune's expected test accuracy minus feature extraction's (central estimates, before training): what
    retraining the backbone is expected to add on this data."""
    ft = expected_accuracy("fine-tune", images_per_class, classes, linear_probe, similarity, calibration)[2]
    fe = expected_accuracy("feature-extraction", images_per_class, classes, linear_probe, similarity, calibration)[2]
    return ft - fe


def seconds_range(kind: str, estimate: float | None, calibration: dict | None = None) -> list[float] | None:
    """The training-time range stated for an estimate: the estimate times the band of measured / estimated seconds
    on the validation suite (None without an estimate or a fitted band)."""
    band = (calibration or CALIBRATION).get("seconds", {}).get(kind)
    if estimate is None or not band:
        return None
    return [round(estimate * band[0], 1), round(estimate * band[1], 1)]


def calibration_basis(images_per_class: float, similarity: float, measured: bool) -> str:
    """What the expected ranges rest on, in words: the fit, its coverage, and whether this data lies outside it."""
    cal = CALIBRATION
    mode = "measured" if measured else "described"
    text = (f"fitted on {cal['cases']} validation cases (recommend --validate, the comparison's default schedules, "
            f"{cal['sizes'][0]}-{cal['sizes'][-1]} a class)")
    lodo = cal.get("coverage", {}).get("leave_one_dataset_out", {}).get(mode)
    if lodo:
        text += (f"; leaving each dataset out, {min(lodo.values()):.0%} or more of each strategy's accuracies fell "
                 "inside")
    if not measured:
        text += "; from the size and the similarity typed in, so wider"
    if not cal["sizes"][0] <= images_per_class <= cal["sizes"][-1]:
        text += f"; {images_per_class:g} a class is outside the sizes validated: extrapolated"
    low, high = cal.get("similarities", (0.0, 1.0))
    if not low <= similarity <= high:
        text += (f"; similarity {similarity:.2f} is outside the {low:.2f}-{high:.2f} validated: taken as the "
                 "nearer end")
    return text
