#!/bin/sh
# Regenerates the test audio in this folder (needs espeak-ng and sox; -R makes sox's
# dither/noise repeatable). Run from tests/data: sh make_data.sh
set -eu
T=$(mktemp -d)
say() { espeak-ng -v en-us -s 175 -w "$T/raw$1.wav" "$2"
        # 16 kHz mono 16-bit, leading/trailing espeak silence trimmed so labels are tight
        sox -R "$T/raw$1.wav" -r 16000 -c 1 -b 16 "$T/s$1.wav" \
            silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse; }
say 1 "The quick brown fox jumps over the lazy dog."
say 2 "Voice activity detection finds speech."
say 3 "Noise is ignored."
gap() { sox -R -n -r 16000 -c 1 -b 16 "$T/$1.wav" trim 0 "$2"; }
gap lead 0.4; gap mid 1.5; gap tail 0.4
sox -R "$T/lead.wav" "$T/s1.wav" "$T/mid.wav" "$T/s2.wav" "$T/mid.wav" "$T/s3.wav" "$T/tail.wav" "$T/clean.wav"
len=$(soxi -D "$T/clean.wav")
# about -50 dBFS of white noise so the gaps are not digital silence
sox -R -n -r 16000 -c 1 -b 16 "$T/hiss.wav" synth "$len" whitenoise vol 0.003
sox -R -m -v 1 "$T/clean.wav" -v 1 "$T/hiss.wav" speech_en.wav
# telephone version: 8 kHz G.711 mu-law WAV, band-limited like a phone line
sox -R speech_en.wav -r 8000 -e mu-law -b 8 speech_8k_mulaw.wav sinc 300-3400
# 44.1 kHz stereo FLAC of the first sentence; right channel 6 dB quieter
sox -R speech_en.wav -r 44100 "$T/mono44.wav" trim 0 3.2
sox -R -M "$T/mono44.wav" -v 0.5 "$T/mono44.wav" -b 16 stereo_44k.flac
# Ogg Vorbis of the whole file at 16 kHz
sox -R speech_en.wav -C 3 speech.ogg
# zero samples, random bytes, 2 s of pink noise (no speech)
sox -R -n -r 16000 -c 1 -b 16 empty.wav trim 0 0
head -c 4096 /dev/urandom > garbage.wav
sox -R -n -r 16000 -c 1 -b 16 noise.wav synth 2 pinknoise vol 0.1
# labels of speech_en.wav (path,start_s,end_s), from the trimmed sentence lengths
l1=$(soxi -D "$T/s1.wav"); l2=$(soxi -D "$T/s2.wav"); l3=$(soxi -D "$T/s3.wav")
awk -v a="$l1" -v b="$l2" -v c="$l3" 'BEGIN {
  s = 0.4; printf "path,start_s,end_s\n";
  printf "speech_en.wav,%.3f,%.3f\n", s, s + a; s += a + 1.5;
  printf "speech_en.wav,%.3f,%.3f\n", s, s + b; s += b + 1.5;
  printf "speech_en.wav,%.3f,%.3f\n", s, s + c;
  printf "noise.wav,,\n" }' > labels.csv
rm -r "$T"
