"""Synthetic speech: utterance specs and their rendering with espeak-ng, flite and festival.

Specs are drawn in the parent process from one seeded RNG, so the list of utterances (and
so the cache) is the same on every build; rendering runs in worker processes.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import InvalidInputError

# Variants of espeak-ng ("!v" folder) and languages held out for dev: their voices are
# never heard in training (speaker split, see docs/data.md).
ESPEAK_DEV_VARIANTS = frozenset(
    {"f2", "m3", "klatt4", "Andrea", "Mario", "belinda", "grandpa", "zac"}
)
ESPEAK_DEV_LANGS = frozenset({"sw"})
# Languages whose voices crash or print nothing for digits in this espeak-ng build.
ESPEAK_BROKEN_LANGS = frozenset({"kl", "chr-US-Qaaa-x-west", "nog", "he", "qya", "tk", "sjn", "cv"})
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")  # awb_time only speaks the time
FLITE_DEV_VOICES = frozenset({"rms"})
# Festival voices: name -> (language, the text encoding the voice's lexicon reads). Fed
# UTF-8, the Czech, Finnish, Catalan and Italian voices spell out the bytes of every
# accented letter (a 2.6 s Finnish phrase came out 11 s long); the Russian voice reads UTF-8.
# The Hindi, Marathi and Telugu NSK voices of issue 16 do not load in this festival
# (``hindi_phones.scm`` is missing from their packages): not used.
FESTIVAL_VOICES = {
    "kal_diphone": ("en", "ascii"),
    "ked_diphone": ("en", "ascii"),
    "cmu_us_slt_arctic_hts": ("en", "ascii"),  # slt is flite's slt too: same speaker, train
    "lp_diphone": ("it", "latin-1"),
    "pc_diphone": ("it", "latin-1"),
    "czech_dita": ("cs", "iso-8859-2"),
    "czech_krb": ("cs", "iso-8859-2"),
    "czech_machac": ("cs", "iso-8859-2"),
    "czech_ph": ("cs", "iso-8859-2"),
    "suo_fi_lj_diphone": ("fi", "latin-1"),
    "hy_fi_mv_diphone": ("fi", "latin-1"),
    "upc_ca_ona_hts": ("ca", "latin-1"),
    "msu_ru_nsh_clunits": ("ru", "utf-8"),
}
# One voice of each language with two or more voices is dev (speaker split).
FESTIVAL_DEV_VOICES = frozenset({"czech_machac", "hy_fi_mv_diphone", "pc_diphone"})
# Share of utterances per engine: espeak-ng has by far the most voices and languages;
# festival's recorded diphone and HTS voices sound the most natural of the three.
ENGINE_SHARE = (("espeak-ng", 0.65), ("flite", 0.13), ("festival", 0.22))
# Variants that are not a human voice at all.
ESPEAK_SKIP_VARIANTS = frozenset({"UniRobot"})

WORDS_EN = (
    "yes no stop go okay hello hi thanks right left up down one two three four five six seven "
    "eight nine ten zero help wait cancel repeat next back menu operator please sure maybe "
    "never always today tomorrow yesterday morning evening coffee water music seven eleven"
).split()

PHRASES = {
    "en": [
        "Please hold while we connect your call",
        "The quick brown fox jumps over the lazy dog",
        "I would like to book a table for two at eight o'clock",
        "Could you say that again, a little more slowly",
        "The meeting has been moved to Thursday afternoon",
        "Turn left at the next junction and then keep straight on",
        "We are sorry, all our agents are busy at the moment",
        "She sells sea shells by the sea shore",
        "Is anybody there? I can't hear you very well",
        "The weather will be cloudy with a chance of rain",
        "Remember to save your work before you leave",
        "Your account balance is forty two dollars and ten cents",
        "Thank you for calling, goodbye",
        "Well, I am not sure that is a good idea",
        "Put the red book back on the top shelf",
        "Five minutes until the train departs from platform nine",
    ],
    "de": [
        "Guten Morgen, wie geht es Ihnen heute",
        "Der Zug nach Berlin fährt um acht Uhr ab",
        "Bitte warten Sie einen Moment",
        "Ich habe keine Zeit, vielleicht morgen",
        "Das Wetter ist heute schön und warm",
    ],
    "fr": [
        "Bonjour, comment allez vous aujourd'hui",
        "Le train pour Paris part à huit heures",
        "Veuillez patienter quelques instants",
        "Je ne sais pas, peut être demain",
        "Il fait beau et chaud aujourd'hui",
    ],
    "es": [
        "Buenos días, cómo está usted hoy",
        "El tren para Madrid sale a las ocho",
        "Por favor espere un momento",
        "No lo sé, quizás mañana",
        "Hoy hace buen tiempo y calor",
    ],
    "it": [
        "Buongiorno, come sta oggi",
        "Il treno per Roma parte alle otto",
        "Per favore attenda un momento",
        "Non lo so, forse domani",
        "Oggi fa bel tempo e caldo",
        "Grazie per aver chiamato, arrivederci",
    ],
    "pt": [
        "Bom dia, como está hoje",
        "O comboio para Lisboa parte às oito horas",
        "Por favor aguarde um momento",
        "Não sei, talvez amanhã",
    ],
    "nl": [
        "Goedemorgen, hoe gaat het met u",
        "De trein naar Amsterdam vertrekt om acht uur",
        "Een ogenblik geduld alstublieft",
    ],
    "ru": [
        "Доброе утро, как у вас дела сегодня",
        "Поезд в Москву отправляется в восемь часов",
        "Пожалуйста, подождите минуту",
        "Я не знаю, может быть завтра",
        "Сегодня хорошая и тёплая погода",
        "Спасибо за звонок, до свидания",
    ],
    "pl": [
        "Dzień dobry, jak się pan dzisiaj czuje",
        "Pociąg do Warszawy odjeżdża o ósmej",
        "Proszę chwilę poczekać",
    ],
    "sv": ["God morgon, hur mår du idag", "Tåget till Stockholm går klockan åtta"],
    "fi": [
        "Hyvää huomenta, mitä kuuluu tänään",
        "Juna Helsinkiin lähtee kello kahdeksan",
        "Odottakaa hetki, olkaa hyvä",
        "En tiedä, ehkä huomenna",
        "Tänään on kaunis ja lämmin päivä",
    ],
    "tr": ["Günaydın, bugün nasılsınız", "İstanbul treni saat sekizde kalkıyor"],
    "cs": [
        "Dobré ráno, jak se dnes máte",
        "Vlak do Prahy odjíždí v osm hodin",
        "Prosím, počkejte chvíli",
        "Nevím, možná zítra",
        "Dnes je krásné a teplé počasí",
        "Zavolejte mi prosím zpátky večer",
    ],
    "ca": [
        "Bon dia, com estàs avui",
        "El tren cap a Barcelona surt a les vuit",
        "Si us plau, esperi un moment",
        "No ho sé, potser demà",
        "Avui fa bon temps i calor",
        "Gràcies per trucar, adéu",
    ],
    "hu": ["Jó reggelt, hogy van ma", "A vonat Budapestre nyolc órakor indul"],
    "sw": ["Habari ya asubuhi, hujambo leo", "Treni ya Nairobi inaondoka saa mbili"],
    "vi": ["Chào buổi sáng, hôm nay bạn khỏe không", "Tàu đi Hà Nội khởi hành lúc tám giờ"],
    "cmn": ["早上好，你今天好吗", "去北京的火车八点出发"],
    "ja": ["おはようございます、今日はお元気ですか", "東京行きの電車は八時に出発します"],
    "hi": ["सुप्रभात, आज आप कैसे हैं", "दिल्ली की ट्रेन आठ बजे निकलती है"],
    "ar": ["صباح الخير، كيف حالك اليوم", "يغادر القطار إلى القاهرة في الساعة الثامنة"],
    "el": ["Καλημέρα, τι κάνετε σήμερα", "Το τρένο για την Αθήνα φεύγει στις οκτώ"],
}


def _number_text(rng: random.Random) -> str:
    """Digits and dates: every espeak-ng language reads these in its own words."""
    kind = rng.random()
    if kind < 0.4:
        return str(rng.randint(0, 99))
    if kind < 0.7:
        return f"{rng.randint(100, 99999)}, {rng.randint(1, 999)}"
    return f"{rng.randint(1, 28)}.{rng.randint(1, 12)}.{rng.randint(1900, 2030)}. {rng.randint(1, 9999)}"


def _text(lang: str, rng: random.Random, numbers: bool = True) -> str:
    """One utterance: a single word (< 1 s), one phrase or several phrases with pauses.

    ``numbers=False``: phrases only (festival's non-English voices do not all read digits)."""
    base = lang.split("-")[0]
    phrases = PHRASES.get(base)
    r = rng.random()
    if r < 0.3:  # short words are the scarcest material
        if base == "en":
            return rng.choice(WORDS_EN)
        if phrases:
            return rng.choice(rng.choice(phrases).split()[:3])
        return str(rng.randint(0, 20))
    parts = 1 if r < 0.6 else rng.randint(2, 4)
    out = []
    for _ in range(parts):
        if phrases and (rng.random() < 0.8 or not numbers):
            out.append(rng.choice(phrases))
        else:
            out.append(_number_text(rng))
    sep = rng.choice([". ", ", ", "... ", "? "])
    return sep.join(out) + "."


def espeak_languages() -> list[str]:
    """Language codes of the installed espeak-ng voices (``espeak-ng --voices``)."""
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True)
    langs = []
    for line in out.stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 2:
            langs.append(cols[1])
    return sorted(set(langs) - ESPEAK_BROKEN_LANGS)


def espeak_variants() -> list[str]:
    """Names of the espeak-ng voice variants (``espeak-ng-data/voices/!v``)."""
    for root in ("/usr/lib/x86_64-linux-gnu/espeak-ng-data", "/usr/share/espeak-ng-data"):
        vdir = Path(root) / "voices" / "!v"
        if vdir.is_dir():
            return sorted(p.name for p in vdir.iterdir() if p.name not in ESPEAK_SKIP_VARIANTS)
    return []


def synth_specs(n: int, seed: int) -> list[dict]:
    """``n`` utterance specs: engine, voice, text, speed and pitch; deterministic in ``seed``."""
    if n <= 0:
        return []
    rng = random.Random(seed)
    langs = espeak_languages()
    variants = [""] + espeak_variants()
    specs = []
    for i in range(n):
        r = rng.random()
        engine = "espeak-ng" if r < ENGINE_SHARE[0][1] else "flite"
        if r >= ENGINE_SHARE[0][1] + ENGINE_SHARE[1][1]:
            engine = "festival"
        if engine == "espeak-ng":
            # Half the utterances in languages with written phrases, half across all.
            written = [lg for lg in langs if lg.split("-")[0] in PHRASES]
            lang = rng.choice(written if rng.random() < 0.5 else langs)
            variant = rng.choice(variants)
            voice = f"{lang}+{variant}" if variant else lang
            dev = variant in ESPEAK_DEV_VARIANTS or lang.split("-")[0] in ESPEAK_DEV_LANGS
            spec = {
                "engine": engine,
                "voice": voice,
                "lang": lang,
                "rate_wpm": rng.randint(90, 260),
                "pitch": rng.randint(15, 85),
            }
        else:
            if engine == "flite":
                voice, lang = rng.choice(FLITE_VOICES), "en"
            else:
                voice = rng.choice(sorted(FESTIVAL_VOICES))
                lang = FESTIVAL_VOICES[voice][0]
            dev = voice in FLITE_DEV_VOICES or voice in FESTIVAL_DEV_VOICES
            spec = {
                "engine": engine,
                "voice": voice,
                "lang": lang,
                "stretch": round(rng.uniform(0.75, 1.4), 2),
                "f0_hz": rng.randint(80, 220),
            }
        spec["text"] = _text(lang, rng, numbers=engine != "festival" or lang == "en")
        spec["id"] = i
        spec["split"] = "dev" if dev else "train"
        specs.append(spec)
    return specs


def render(spec: dict) -> tuple[np.ndarray, int]:
    """Synthesise one spec -> ``((n,) float32 mono, sample rate in Hz)``."""
    fd, wav = tempfile.mkstemp(suffix=".wav", prefix="vadnet-synth-")
    os.close(fd)
    try:
        engine = spec["engine"]
        if engine == "espeak-ng":
            cmd = ["espeak-ng", "-v", spec["voice"], "-s", str(spec["rate_wpm"])]
            cmd += ["-p", str(spec["pitch"]), "-w", wav, spec["text"]]
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        elif engine == "flite":
            cmd = ["flite", "-voice", spec["voice"], "-t", spec["text"], "-o", wav]
            cmd += ["--setf", f"duration_stretch={spec['stretch']}"]
            cmd += ["--setf", f"int_f0_target_mean={spec['f0_hz']}"]
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        elif engine == "festival":
            cmd = ["text2wave", "-eval", f"(voice_{spec['voice']})"]
            cmd += ["-eval", f"(Parameter.set 'Duration_Stretch {spec['stretch']})", "-o", wav]
            encoding = FESTIVAL_VOICES[spec["voice"]][1]
            text = spec["text"].encode(encoding, errors="replace")
            subprocess.run(cmd, input=text, check=True, capture_output=True, timeout=60)
        else:
            raise InvalidInputError(
                f"unknown synthesis engine {engine!r}: use espeak-ng, flite or festival"
            )
        x, sr = sf.read(wav, dtype="float32", always_2d=True)
        return x.mean(axis=1), int(sr)
    finally:
        os.unlink(wav)
