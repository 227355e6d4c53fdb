"""Issue 16's sources: the tuxpaint/colobot/gcompris catalogue, the Qt resource reader and
the festival voices. Each test needs its Debian package and is skipped where it is absent."""

from __future__ import annotations

import hashlib
import shutil
from collections import defaultdict

import numpy as np
import pytest

from vadnet.model.training import sources_edu
from vadnet.model.training.rcc import rcc_files
from vadnet.model.training.sources import _process
from vadnet.model.training.sources_synth import FESTIVAL_VOICES, render

needs_tuxpaint = pytest.mark.skipif(
    not sources_edu.TUXPAINT.is_dir(), reason="tuxpaint-stamps-default is not installed"
)
needs_gcompris = pytest.mark.skipif(
    not sources_edu.GCOMPRIS_RCC.is_dir(), reason="gcompris-qt-data is not installed"
)


@needs_tuxpaint
def test_tuxpaint_languages_are_whole_speakers_and_dev_holds_whole_languages():
    items = sources_edu.tuxpaint_speech_items()
    splits = defaultdict(set)
    for it in items:
        assert it.speaker == f"tuxpaint:{it.lang}"
        splits[it.lang].add(it.split)
    assert all(len(s) == 1 for s in splits.values())  # never a language on both sides
    assert {lang for lang, s in splits.items() if s == {"dev"}} == set(
        sources_edu.TUXPAINT_DEV_LANGS
    )
    assert len(splits) >= 12 and len(items) > 6000
    # the one misnamed file (``_desc_da.ogg.ogg``) is Danish, not a language "da.ogg"
    assert "da.ogg" not in splits
    # byte-identical copies (a letter's description under four stamps) are kept once
    digests = [hashlib.sha256(open(it.path, "rb").read()).digest() for it in items]
    assert len(set(digests)) == len(digests)


@needs_tuxpaint
def test_tuxpaint_background_sounds_leave_out_spoken_names_and_voices():
    paths = [it.path for it in sources_edu.tuxpaint_noise_items()]
    assert paths and not any("_desc" in p for p in paths)
    assert not any(sources_edu.TUXPAINT_LOCALE.search(p) for p in paths)  # 7_de.ogg: "sieben"
    assert not any("/stamps/symbols/" in p for p in paths)  # spoken letters and digits
    kept = [it.path for it in sources_edu.edu_items()]
    assert not any(p.endswith(sources_edu.EDU_NOISE_DROP) for p in kept)
    assert any(p.endswith("dreydl-nun.ogg") for p in paths)  # dropped by the list, not missed


@needs_gcompris
def test_gcompris_sounds_come_out_of_the_resource_bundles_and_decode():
    files = rcc_files(sources_edu.GCOMPRIS_RCC / "core.rcc")
    assert any(k.endswith("/sounds/bleep.wav") for k in files)
    items = sources_edu.gcompris_items()
    assert {it.noise_kind for it in items} == {"music", "sfx", "ambient"}
    assert {it.split for it in items} == {"dev"}
    item, q, _, stats, reason = _process(items[0])
    assert reason is None and q.size > 0 and stats["rate_hz"] > 0


def test_rcc_reader_refuses_other_files(tmp_path):
    bad = tmp_path / "x.rcc"
    bad.write_bytes(b"RIFF" + bytes(40))
    with pytest.raises(Exception, match="not a Qt resource bundle"):
        rcc_files(bad)


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="festival is not installed")
@pytest.mark.parametrize("voice", ["suo_fi_lj_diphone", "czech_dita", "upc_ca_ona_hts"])
def test_festival_voices_read_accented_text_in_their_own_encoding(voice):
    """Fed UTF-8, these voices spell out the bytes of accented letters: a 2.6 s Finnish
    phrase came out 11 s long. In the voice's own encoding it is a normal phrase."""
    text = {"fi": "Hyvää huomenta, mitä kuuluu tänään", "cs": "Dobré ráno, jak se dnes máte"}
    text["ca"] = "Bon dia, com estàs avui"
    lang = FESTIVAL_VOICES[voice][0]
    spec = {"engine": "festival", "voice": voice, "text": text[lang], "stretch": 1.0}
    try:
        x, sr = render(spec)
    except Exception as e:  # noqa: BLE001 - a voice package not installed here
        pytest.skip(f"{voice} does not speak here: {e}")
    seconds = x.size / sr
    assert 0.8 < seconds < 5.0, seconds
    assert np.abs(x).max() > 0.05


def test_a_cache_of_an_older_catalogue_is_not_taken_for_the_new_one(tmp_path, data_dir, caplog):
    """`vadnet train --prepare` on a directory holding an older cache must not silently
    leave the new sources out; training on it still works, with a warning."""
    from vadnet.model.errors import InvalidInputError
    from vadnet.model.training.sources import build_cache, load_cache

    item = {"kind": "speech", "source": "t", "path": str(data_dir / "speech_en.wav")}
    cache = build_cache(tmp_path / "c", synth_utterances=0, workers=1, items=[item])
    assert build_cache(cache, synth_utterances=0, workers=1, items=[item]) == cache
    (cache / "DONE").write_text("built in 1.0 s\n")  # what caches before issue 16 hold
    with pytest.raises(InvalidInputError, match="older|catalogue"):
        build_cache(cache, synth_utterances=0, workers=1, items=[item])
    with caplog.at_level("WARNING", logger="vadnet"):
        speech, _ = load_cache(cache)
    assert len(speech) == 1 and "before-issue16" in caplog.text
