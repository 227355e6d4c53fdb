"""Which installed files are training material, with source, speaker, language and split.

Only the folders listed in docs/data.md are read; other recordings on the machine are kept
aside for independent evaluation. Zip members are named ``<zip path>::<member>``.

Dev split by speaker and source (never by file): see ``docs/data.md`` for the reasons.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

ASTERISK = Path("/usr/share/asterisk/sounds")
MOH = Path("/usr/share/asterisk/moh")
GAMES = Path("/usr/share/games")
WZ_ZIP = GAMES / "warzone2100" / "base.wz"
OAD_ZIP = GAMES / "0ad" / "mods" / "public" / "public.zip"
MEGAGLEST = GAMES / "megaglest" / "techs" / "megapack" / "factions"
FROZEN_BUBBLE = GAMES / "frozen-bubble" / "snd"
WARMUX = GAMES / "warmux"

AUDIO_EXT = (".wav", ".ogg", ".flac")

# asterisk: one voice per folder. en and es are both "Allison", so they are one speaker
# and stay together in train; the Russian voice is dev.
ASTERISK_VOICES = {
    "en_US_f_Allison": ("en", "asterisk:Allison", "train"),
    "es_MX_f_Allison": ("es", "asterisk:Allison", "train"),
    "ru_RU_f_IvrvoiceRU": ("ru", "asterisk:IvrvoiceRU", "dev"),
}
# Beeps, tone pairs and the monkeys (an IVR joke prompt) in the prompt folders are not speech.
ASTERISK_NOT_SPEECH = frozenset(
    {
        "beep.wav",
        "beeperr.wav",
        "ascending-2tone.wav",
        "descending-2tone.wav",
        "confbridge-join.wav",
        "confbridge-leave.wav",
        "tt-monkeys.wav",
    }
)
# warzone2100 voice folders. Speaker = the voice actor as far as the layout tells:
# campaign/tutorial narration, the taunt and VTOL-pilot sets (digit suffix = voice), Nexus.
WZ_SPEECH_DIRS = (
    "audio/memressp/",
    "audio/tutorial/",
    "audio/extra/",
    "audio/taunts/",
    "audio/countdown/",
    "audio/vtoltalk/",
    "audio/nexus/",
    "sequenceaudio/",
)
# Looked at in docs/labels: the VTOL pilots are radio lines (static floor 20 dB under the
# voice), Nexus is a deliberately distorted machine voice, and the laughs are not speech.
# sequenceaudio holds video soundtracks: machine noise and effects under and after the voice.
WZ_DROP_DIRS = ("audio/vtoltalk/", "audio/nexus/", "sequenceaudio/")
WZ_DROP_NAME = re.compile(r"/(haha|hahaha|laugh)\d*\.ogg$")
WZ_DEV_SPEAKERS = frozenset({"wz:taunt2", "wz:countdown"})
# 0ad voices: speaker = civilisation + gender (one actor per civ/gender folder set).
OAD_CIVS = {"greek": "grc", "latin": "la", "persian": "peo", "napatan": "xmr"}
OAD_DEV_CIV = "greek"
OAD_NOISE_DIRS = {
    "audio/attack/": ("0ad-attack", "sfx"),
    "audio/resource/": ("0ad-resource", "sfx"),
    "audio/ambient/": ("0ad-ambient", "ambient"),
    "audio/interface/": ("0ad-interface", "sfx"),
    "audio/actor/fauna/": ("0ad-fauna", "sfx"),
}
# megaglest: speaker = faction/unit. Only human units; animals, monsters and machines
# (and voices processed into monsters) are not speech.
MEGAGLEST_NOT_HUMAN = frozenset(
    {
        "egypt/chicken",
        "egypt/anubis_warrior",
        "egypt/mummy",
        "indian/bull",
        "indian/thunderbird",
        "magic/behemoth",
        "magic/dragon_rider",  # a hissing monster voice, noise from end to end
        "magic/dragon",
        "magic/evil_dragon",
        "magic/ghost_armor",
        "norsemen/wild_sow",
        "persian/genie",
    }
)
MEGAGLEST_DEV_FACTIONS = frozenset({"magic"})
# Noise: dev holds whole sources, music and non-music.
NOISE_DEV_SOURCES = frozenset({"frozen-bubble", "0ad-resource", "wz-sfx"})
# Noise files an independent VAD (model/training/sources_vet.py) heard speech in and whose
# spectrogram shows a voice (formant glides) or chanting: not safe as "non-speech".
NOISE_DROP = (
    "weapons/suicide.ogg",  # warmux: a voice line
    "select/building/sel_temple_10.ogg",  # 0ad: chant
    "sfx/misc/help.ogg",  # warzone2100: a voice calling
)


@dataclass
class SourceItem:
    """One file (or zip member, or synthetic utterance) to decode into the cache."""

    kind: str  # "speech" | "noise"
    source: str
    path: str  # file path, "<zip>::<member>", or "synth:<engine>:<id>"
    speaker: str = ""
    lang: str = ""
    split: str = "train"
    noise_kind: str = ""  # "music" | "sfx" | "ambient" for noise
    synth: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# Single files that an independent VAD (model/training/sources_vet.py) hears no speech in and whose
# spectrogram shows a cry, a laugh or breath noise rather than words.
SPEECH_DROP = (
    "greek/civ/civ_male_attack_10.ogg",  # war cry
    "horseman/sounds/horseman_ack4.wav",  # shouts without words
    "horseman/sounds/horseman_ack5.wav",
    "horseman/sounds/horseman_select5.wav",
    "cudgel_lady/sounds/cudgel_ack6.wav",  # laugh
)


def _is_audio(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXT)


def asterisk_items() -> list[SourceItem]:
    """Asterisk prompts (8 kHz telephone speech), without the ``silence/`` folder."""
    items = []
    for folder, (lang, speaker, split) in ASTERISK_VOICES.items():
        root = ASTERISK / folder
        for p in sorted(root.rglob("*")):
            if p.name in ASTERISK_NOT_SPEECH or "silence" in p.relative_to(root).parts:
                continue
            if p.is_file() and _is_audio(p.name):
                items.append(SourceItem("speech", "asterisk", str(p), speaker, lang, split))
    return items


def _wz_speaker(member: str) -> str:
    parts = member.split("/")
    if parts[0] == "sequenceaudio":
        return "wz:sequence"
    folder = parts[1]
    if folder == "taunts":
        return "wz:" + parts[2]  # taunt1..3
    if folder == "vtoltalk":
        m = re.search(r"(\d)\.ogg$", member)
        return "wz:vtol" + (m.group(1) if m else "")
    return "wz:" + folder


def warzone_items() -> list[SourceItem]:
    """warzone2100 voice folders (speech) and ``audio/sfx`` (noise), from base.wz."""
    if not WZ_ZIP.exists():
        return []
    items = []
    with zipfile.ZipFile(WZ_ZIP) as z:
        names = sorted(n for n in z.namelist() if _is_audio(n))
    for n in names:
        path = f"{WZ_ZIP}::{n}"
        if n.startswith(WZ_DROP_DIRS) or WZ_DROP_NAME.search(n):
            continue
        if n.startswith(WZ_SPEECH_DIRS):
            spk = _wz_speaker(n)
            split = "dev" if spk in WZ_DEV_SPEAKERS else "train"
            items.append(SourceItem("speech", "warzone2100", path, spk, "en", split))
        elif n.startswith("audio/sfx/"):
            split = "dev" if "wz-sfx" in NOISE_DEV_SOURCES else "train"
            items.append(SourceItem("noise", "wz-sfx", path, split=split, noise_kind="sfx"))
    return items


def oad_items() -> list[SourceItem]:
    """0ad voice folders (speech) and attack/resource/ambient/interface/fauna (noise)."""
    if not OAD_ZIP.exists():
        return []
    items = []
    with zipfile.ZipFile(OAD_ZIP) as z:
        names = sorted(n for n in z.namelist() if n.startswith("audio/") and _is_audio(n))
    for n in names:
        path = f"{OAD_ZIP}::{n}"
        parts = n.split("/")
        if parts[1] == "voice" and parts[2] in OAD_CIVS:
            gender = "female" if "_female_" in parts[-1] else "male"
            spk = f"0ad:{parts[2]}-{gender}"
            split = "dev" if parts[2] == OAD_DEV_CIV else "train"
            items.append(SourceItem("speech", "0ad", path, spk, OAD_CIVS[parts[2]], split))
            continue
        for prefix, (source, kind) in OAD_NOISE_DIRS.items():
            if n.startswith(prefix):
                split = "dev" if source in NOISE_DEV_SOURCES else "train"
                items.append(SourceItem("noise", source, path, split=split, noise_kind=kind))
    return items


def megaglest_items() -> list[SourceItem]:
    """megaglest ``*_ack*`` / ``*_select*`` sounds of human units."""
    items = []
    for p in sorted(MEGAGLEST.glob("*/units/*/sounds/*")):
        if not (_is_audio(p.name) and ("_ack" in p.name or "_select" in p.name)):
            continue
        faction, unit = p.parts[-5], p.parts[-3]
        if f"{faction}/{unit}" in MEGAGLEST_NOT_HUMAN:
            continue
        split = "dev" if faction in MEGAGLEST_DEV_FACTIONS else "train"
        items.append(SourceItem("speech", "megaglest", str(p), f"mg:{faction}/{unit}", "en", split))
    return items


def noise_file_items() -> list[SourceItem]:
    """Music on hold, frozen-bubble, warmux music and weapon sounds."""
    items = []

    def add(paths, source, kind_of):
        split = "dev" if source in NOISE_DEV_SOURCES else "train"
        for p in sorted(paths):
            if p.is_file() and _is_audio(p.name):
                items.append(
                    SourceItem("noise", source, str(p), split=split, noise_kind=kind_of(p))
                )

    add(MOH.glob("*"), "moh", lambda p: "music")
    add(FROZEN_BUBBLE.glob("*"), "frozen-bubble", lambda p: "music" if "zik" in p.name else "sfx")
    add((WARMUX / "music").rglob("*"), "warmux-music", lambda p: "music")
    add((WARMUX / "sound" / "default" / "weapons").glob("*"), "warmux-sfx", lambda p: "sfx")
    return items


def real_items() -> list[SourceItem]:
    """Every real (recorded) speech and noise item, in a fixed order."""
    items = asterisk_items() + warzone_items() + oad_items() + megaglest_items()
    items += noise_file_items()
    from .sources_edu import edu_items  # here: sources_edu imports SourceItem from this module

    items += edu_items()
    drop = NOISE_DROP + SPEECH_DROP
    return [it for it in items if not it.path.endswith(drop)]
