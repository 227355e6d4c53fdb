"""Issue 16's sources: tuxpaint stamps (spoken descriptions and sounds), colobot, gcompris.

Kept apart from ``sources_catalog`` (the earlier games and asterisk) because these three
packages come with their own layout rules; the same ``SourceItem`` records come out.
gcompris ships its sounds inside Qt resource bundles: members are named
``<bundle.rcc>::<resource path>`` like zip members.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .rcc import rcc_files
from .sources_catalog import AUDIO_EXT, SourceItem

TUXPAINT = Path("/usr/share/tuxpaint/stamps")
COLOBOT = Path("/usr/share/games/colobot")
GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")

# tuxpaint descriptions: ``<stamp>_desc[_<lang>].ogg`` (one file is ``_desc_da.ogg.ogg``);
# no suffix is the English original. Each language was read by one volunteer: speaker =
# language. Three of the larger languages are dev (0.90 h together); none of them shares a
# language with a train speaker of tuxpaint, and Russian stays in train (asterisk's
# Russian voice is dev already, so dev keeps a Slavic language through it).
TUXPAINT_DESC = re.compile(r"_desc(?:_([A-Za-z_]+?))?(?:\.ogg)?\.ogg$")
TUXPAINT_DEV_LANGS = frozenset({"ca", "el", "bg"})
# Descriptions with no voice in them: Silero hears none of it, and the spectrogram shows a
# snort (the stamp's sound saved as its description) and a steady hum.
TUXPAINT_SPEECH_DROP = ("bovines/bull_desc.ogg", "vegetables/onion_desc_bg.ogg")
# Stamp sounds with a locale suffix (``7_de.ogg``, ``a_filled_en_GB.ogg``) are the stamp's
# name read aloud, and ``symbols/`` holds spoken letters and digits (and the faces' voice
# sounds) even without one: speech, not background.
TUXPAINT_LOCALE = re.compile(r"_[a-z]{2,3}(?:_[A-Z]{2})?\.ogg$")
TUXPAINT_NOT_NOISE_DIRS = ("symbols/",)
# Noise split by source, as the earlier sources: colobot's nine named tracks (a later
# composer than the numbered ones) and all of gcompris (music, effects and the ambient
# recordings of memory-sound) go to dev; dev then holds recorded ambient, which it lacked.
COLOBOT_DEV_MUSIC = re.compile(r"^[A-Z]")  # Constructive.ogg ... vs music002.ogg
GCOMPRIS_SPLIT = "dev"
GCOMPRIS_MUSIC = ("explore_world_music", "instruments", "melody", "play_rhythm")
GCOMPRIS_AMBIENT = ("memory-sound", "watercycle")
# Sounds with a voice in them, from the ones the bundled model and Silero score highest
# (docs/data.md, "What was dropped"): not safe as non-speech. Nobody listened: a file is
# dropped when both detectors, or one of them and its name, point to a voice.
EDU_NOISE_DROP = (
    "hanukkah/dreydl-gimmel.ogg",  # the four dreidel letters, read aloud (Silero 0.67-0.92)
    "hanukkah/dreydl-hay.ogg",
    "hanukkah/dreydl-nun.ogg",
    "hanukkah/dreydl-shin.ogg",
    "space/apollo_lander.ogg",  # a radio voice (Silero 0.75, ours 0.23)
    "halloween/ghost.ogg",  # a voice moaning (Silero 0.78)
    "gnumch-equality/resource/eat.wav",  # a voice (Silero 0.94, ours 0.24)
    "chronos/resource/sound/3.ogg",  # a voice counting down (Silero 0.65, ours 0.22)
    "ballcatch/resource/tuxok.wav",  # Tux saying "ok" (Silero 0.50)
    "ballcatch/resource/youcannot.wav",  # "you cannot" (Silero 0.28)
)


def _audio(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(AUDIO_EXT)


def tuxpaint_speech_items() -> list[SourceItem]:
    """The stamps' spoken descriptions, speaker = language, each recording once.

    965 of the 7,418 files are byte-identical copies (a letter's description under its
    filled/outlined and upper/lower-case stamps, ``frog`` and ``frog-1``): kept once, or the
    mixer would draw those recordings up to four times as often and the benchmark would
    hear them again."""
    items, seen = [], set()
    for p in sorted(TUXPAINT.rglob("*_desc*.ogg")):
        m = TUXPAINT_DESC.search(p.name)
        digest = hashlib.sha256(p.read_bytes()).digest()
        if m is None or digest in seen or str(p).endswith(TUXPAINT_SPEECH_DROP):
            continue
        seen.add(digest)
        lang = m.group(1) or "en"
        split = "dev" if lang in TUXPAINT_DEV_LANGS else "train"
        items.append(SourceItem("speech", "tuxpaint", str(p), f"tuxpaint:{lang}", lang, split))
    return items


def tuxpaint_noise_items() -> list[SourceItem]:
    """The stamps' other sounds: animals, instruments, tools, vehicles (train)."""
    items = []
    for p in sorted(TUXPAINT.rglob("*.ogg")):
        rel = p.relative_to(TUXPAINT).as_posix()
        if "_desc" in p.name or TUXPAINT_LOCALE.search(p.name):
            continue
        if rel.startswith(TUXPAINT_NOT_NOISE_DIRS):
            continue
        kind = "music" if rel.startswith("hobbies/music/") else "sfx"
        items.append(SourceItem("noise", "tuxpaint-sfx", str(p), noise_kind=kind))
    return items


def colobot_items() -> list[SourceItem]:
    """colobot-common-sounds: music (named tracks dev, numbered train) and effects (train)."""
    items = []
    for p in sorted((COLOBOT / "music").glob("*")):
        if _audio(p):
            split = "dev" if COLOBOT_DEV_MUSIC.match(p.name) else "train"
            item = SourceItem("noise", "colobot-music", str(p), split=split, noise_kind="music")
            items.append(item)
    for p in sorted((COLOBOT / "sounds").glob("*")):
        if _audio(p):
            items.append(SourceItem("noise", "colobot-sfx", str(p), noise_kind="sfx"))
    return items


def gcompris_items() -> list[SourceItem]:
    """The sounds inside gcompris-qt-data's resource bundles (dev, see above)."""
    items = []
    for bundle in sorted(GCOMPRIS_RCC.glob("*.rcc")):
        members = sorted(m for m in rcc_files(bundle) if m.lower().endswith(AUDIO_EXT))
        for m in members:
            activity = m.split("/")[4] if m.startswith("/gcompris/src/activities/") else ""
            kind = "sfx"
            if activity in GCOMPRIS_MUSIC:
                kind = "music"
            elif activity in GCOMPRIS_AMBIENT:
                kind = "ambient"
            item = SourceItem("noise", "gcompris", f"{bundle}::{m}", split=GCOMPRIS_SPLIT)
            item.noise_kind = kind
            items.append(item)
    return items


def edu_items() -> list[SourceItem]:
    """Every item of the three packages that are installed, in a fixed order."""
    items = tuxpaint_speech_items() + tuxpaint_noise_items() + colobot_items()
    if GCOMPRIS_RCC.is_dir():
        items += gcompris_items()
    return [it for it in items if not it.path.endswith(EDU_NOISE_DROP)]
