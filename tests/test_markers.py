"""Burnt-in markers are found and erased (`bac.preprocess.markers`, applied by `bac.data.rsna.read_image`): on a
drawn "L", on the phantoms (whose generator records where it burnt its markers) and on the 37 annotated real
originals (skipped without `../shared/rsna-sample`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bac.data import rsna
from bac.data.synth import render
from bac.env import REPO
from bac.preprocess import markers
from bac.preprocess.scores import ORIGINALS

SAMPLE = REPO.parent / "shared" / "rsna-sample"


def _film_with_an_l(long_side=512):
    """A smooth bright 'hand' (a Gaussian mound, peak 200) on a dark film, and a white 'L' in a corner."""
    h, w = long_side, int(long_side * 0.8)
    yy, xx = np.mgrid[:h, :w]
    mound = 30 + 170 * np.exp(-(((yy - h * 0.55) / (h * 0.25)) ** 2 + ((xx - w * 0.55) / (w * 0.22)) ** 2))
    film = Image.fromarray(np.clip(mound, 0, 255).astype(np.uint8))
    ImageDraw.Draw(film).text((int(w * 0.05), int(h * 0.05)), "L", fill=255,
                              font=__import__("bac.data.synth", fromlist=["_font"])._font(long_side * 0.08))
    image = np.asarray(film).copy()
    letter = (image > 240) & (yy < h * 0.3) & (xx < w * 0.3)
    return image, letter, mound


def test_a_drawn_l_is_erased_and_the_rest_of_the_film_is_kept():
    image, letter, mound = _film_with_an_l()
    assert letter.sum() > 50
    out = markers.erase(image)
    assert out is not image and image[letter].min() >= 240          # the input is not modified
    assert out[letter].max() < 60                                    # the letter is now background (about 30)
    far = np.ones(letter.shape, bool)
    far[: letter.shape[0] // 3, : letter.shape[1] // 3] = False
    np.testing.assert_array_equal(out[far], image[far])              # nothing else changed
    assert markers.find(image)[letter].mean() > 0.9


def test_a_film_without_markers_is_returned_unchanged():
    image = _film_with_an_l()[2]
    image = np.clip(image, 0, 255).astype(np.uint8)
    assert markers.erase(image) is image and not markers.find(image).any()


def test_the_phantoms_markers_are_erased_and_their_hands_kept():
    """Every burnt "L" + initials on a dark part of 24 demo-size phantoms but at most one is erased; under 0.5 % of a
    hand is."""
    found = drawn = 0
    for seed in range(24):
        ph = render(40.0 + 7 * seed, bool(seed % 2), seed, long_side=384)
        if "marker" not in ph.meta["nuisance"]:
            continue
        x0, y0, x1, y1 = ph.meta["nuisance"]["marker"]["box"]
        if np.median(ph.image[y0:y1, x0:x1]) > 100:   # burnt onto a bright shutter: barely visible there
            continue
        drawn += 1
        bright = np.zeros(ph.image.shape, bool)
        bright[y0:y1, x0:x1] = True
        bright &= ph.image >= 200                                    # the burnt text (level 200-255)
        bright &= ~ph.mask
        erased = markers.find(ph.image)
        found += bright.any() and erased[bright].mean() > 0.5
        # what it takes from a hand: the bright cut end of a forearm bone at a collimation edge, a few dozen pixels
        assert (erased & ph.mask).sum() <= 0.005 * ph.mask.sum(), seed
    assert drawn >= 10 and found >= drawn - 1


def test_a_symbol_on_a_frame_line_is_a_marker_once_long_lines_are_left_out():
    """A burnt-in square touching a faint collimation edge that runs the whole film: grouped with the edge it is one
    long faint candidate (rejected); with straight lines over 60 px left out (`lines`) it stands alone, a marker."""
    film = np.full((512, 410), 40, np.uint8)
    film[:, 95:100] = 85                      # the edge: lifts 45 grey levels over 512 px
    film[200:214, 100:118] = 250              # a white square frame with a dark middle, touching it
    film[204:210, 104:114] = 20
    square = film == 250

    def covered(lines):
        small, found = markers.candidates(film, lines=lines)
        mask = np.zeros(film.shape, bool)
        for m in found:
            if m["marker"]:
                x0, y0, x1, y1 = m["box"]
                mask[y0:y1, x0:x1] |= m["mask"]
        return mask[square].mean()
    assert covered((0,)) == 0 and covered((0, 60)) > 0.9     # all but its pixels on the edge itself


def test_read_image_erases_each_file_once(tmp_path, monkeypatch):
    """The second read of a film takes its erased pixels from the cache (keyed by the file's content), not from
    a second search, and gives the same film."""
    image = _film_with_an_l()[0]
    path = tmp_path / "1.png"
    Image.fromarray(image).save(path)
    first = rsna.read_image(path)
    monkeypatch.setattr(markers, "erase", lambda *a, **k: pytest.fail("searched twice"))
    np.testing.assert_array_equal(rsna.read_image(path), first)
    assert (first != image).any()


def test_read_image_erases_unless_asked_not_to(tmp_path):
    image = _film_with_an_l()[0]
    path = tmp_path / "1.png"
    Image.fromarray(image).save(path)
    np.testing.assert_array_equal(rsna.read_image(path, erase_markers=False), image)
    np.testing.assert_array_equal(rsna.read_image(path), markers.erase(image))
    small = tmp_path / "2.png"
    Image.fromarray(image[::16, ::16].copy()).save(small)           # 32 px: below MIN_MARKER_SIDE, as stored
    np.testing.assert_array_equal(rsna.read_image(small), image[::16, ::16])


@pytest.mark.skipif(not (SAMPLE / "originals").is_dir(), reason=f"the real RSNA sample is not at {SAMPLE}")
def test_real_markers_are_erased_and_the_hands_are_not():
    """The 56 annotated markers of the 37 real originals: most erased; almost nothing erased inside the hand
    boxes outside the markers (the thresholds were chosen on these films: a regression guard, not a held-out
    score)."""
    from bac.preprocess.scores import score_markers
    truth = json.loads(ORIGINALS.read_text())["images"]
    erased = total = 0
    for image_id, t in truth.items():
        raw = rsna.read_image(SAMPLE / "originals" / f"{image_id}.png", erase_markers=False)
        s = score_markers(raw, markers.erase(raw), t)
        erased, total = erased + s["markers_erased"], total + len(t["markers"])
        assert s["erased_in_hand_box"] < 0.005, image_id
    assert total == 56 and erased >= 52


def test_dark_ink_on_a_white_corner_is_erased_and_the_gap_between_two_fingers_is_not():
    """The dark pass: a black-outlined triangle on an unexposed (white) corner is filled with the white around it;
    the black line between two touching fingers (soft tissue 100 around bones of 220) is kept: its ground is
    soft tissue, well under the film's brightest."""
    film = np.full((512, 400), 40.0)
    film[100:400, 100:180] = 100                       # two fingers and the background between them
    film[100:400, 183:260] = 100
    film[120:380, 125:155] = film[120:380, 207:237] = 220
    film += np.random.default_rng(0).normal(0, 3, film.shape)        # the noise of every real film
    film[440:, 330:] = 252                             # an unexposed white corner
    corner = Image.fromarray(np.clip(film, 0, 255).round().astype(np.uint8))
    ImageDraw.Draw(corner).polygon([(350, 500), (380, 500), (365, 470)], outline=0)
    film = np.asarray(corner).copy()
    triangle = film == 0
    out = markers.erase(film)
    assert triangle.sum() > 40 and out[triangle].min() >= 240
    np.testing.assert_array_equal(out[150:350], film[150:350])    # the fingers and the gap (the drawn bones' square
    #                                                               corners lift as letters do: no real bone has them)


def test_a_digital_plate_is_erased_with_its_letter_and_a_noisy_bone_of_its_size_is_kept():
    """The flat pass: a plate of one grey level (111, framed at 173) holding an "L" of another (173) on a noisy
    dark film is filled with the film's grey; a bone-like block of the same size and brightness, with the noise
    every real structure carries, is not touched."""
    rng = np.random.default_rng(0)
    film = np.clip(rng.normal(50, 3, (600, 480)), 0, 255).round().astype(np.uint8)
    film[60:190, 40:125] = 173
    film[61:189, 41:124] = 111
    film[90:160, 70:80] = 173                          # the L
    film[150:160, 70:105] = 173
    film[300:430, 300:385] = np.clip(rng.normal(111, 3, (130, 85)), 0, 255).round().astype(np.uint8)
    out = markers.erase(film)
    assert np.abs(out[60:190, 40:125].astype(int) - 50).max() <= 10
    np.testing.assert_array_equal(out[305:425, 300:385], film[305:425, 300:385])   # (but its square corners)


def test_film_statistics_measure_what_they_say():
    """`scores.film_statistics` on a drawn film: a flat hand box (grey 120) on a noisy background (20, SD 4) with a
    white marker: the box's share, medians, contrast and marker size are exact, the noise close to the drawn SD."""
    from bac.preprocess.scores import film_statistics
    rng = np.random.default_rng(0)
    film = np.clip(rng.normal(20, 4, (384, 300)), 0, 255)
    film[96:288, 75:225] = 120
    film[20:50, 20:40] = 250
    st = film_statistics(film.round().astype(np.uint8), [75, 96, 225, 288], [[20, 20, 40, 50]])
    assert st["hand_share"] == pytest.approx(150 * 192 / (384 * 300))
    assert st["inside"] == 120 and st["outside"] == pytest.approx(20, abs=0.5)
    assert st["contrast"] == pytest.approx(100, abs=0.5)
    assert 2.5 < st["noise"] < 5                      # the 3x3-median residual of white noise: ~0.9 SD
    assert st["markers"][0]["size"] == pytest.approx(30 / 384) and st["markers"][0]["contrast"] > 200
