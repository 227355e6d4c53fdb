"""Background sampling knobs of the mixer, the false-alarm-capped calibration and the
hard-negative loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from vadnet.model.errors import InvalidInputError
from vadnet.model.network import ModelConfig, VadNet
from vadnet.model.training import augment
from vadnet.model.training.data import MixConfig, Mixer
from vadnet.model.training.metrics import frame_metrics
from vadnet.model.training.train import CALIBRATION_RANGE, best_f1_threshold, calibrate


class _Clips:
    """A ClipSet-like set: each clip is a constant signal equal to its index + 1."""

    def __init__(self, records, length=16000, labels=False):
        self.clips, self.length, self.labels = records, length, labels

    def clip(self, i):
        return np.full(self.length, float(i + 1), np.float32)

    def clip_labels(self, i):
        return np.ones(self.length // 256, np.uint8)


def _mixer(**mix):
    speech = _Clips([{"source": "asterisk-en", "speaker": "a"}])
    noise = _Clips(
        [{"source": "m1", "kind": "music"}, {"source": "m2", "kind": "music"}]
        + [{"source": f"s{k}", "kind": "sfx"} for k in range(3)]
        + [{"source": "a0", "kind": "ambient"}]
    )
    return Mixer(speech, noise, MixConfig(**mix))


def _music_share(mixer, draws=4000):
    rng = np.random.default_rng(0)
    pools = [mixer._pick_kind(rng) for _ in range(draws)]
    return np.mean([p is mixer.noise_pools[mixer.music_pool] for p in pools])


def test_music_share_sets_how_often_music_is_drawn():
    assert abs(_music_share(_mixer(music_share=0.5)) - 0.5) < 0.03
    assert abs(_music_share(_mixer(music_share=0.8)) - 0.8) < 0.03
    # None: uniform over the three kinds (the dev protocol).
    assert abs(_music_share(_mixer(music_share=None)) - 1 / 3) < 0.03
    with pytest.raises(InvalidInputError, match=r"music_share must be in \[0, 1\], got -0.1"):
        MixConfig(music_share=-0.1)


def test_speed_off_draws_nothing_extra():
    """p_speed=0 must leave the random stream (so the dev set) exactly as it was."""
    a = _mixer(p_speed=0.0, music_share=None)
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    a._recorded(rng1, 4000)
    rng2.integers(3), rng2.integers(1), rng2.integers(1), rng2.integers(0, 16000 - 4000 + 1)
    assert rng1.random() == rng2.random()


def test_melody_off_draws_nothing_extra_and_on_draws_music():
    """p_melody=0 leaves the random stream (so the dev set) as it was; p_melody=1 makes
    every generated background a melody."""
    rng1, rng2 = np.random.default_rng(9), np.random.default_rng(9)
    off = _mixer(p_melody=0.0)._generated(rng1, 4000)
    np.testing.assert_array_equal(off, augment.generated_noise(rng2, 4000))
    assert rng1.random() == rng2.random()
    rng1, rng2 = np.random.default_rng(9), np.random.default_rng(9)
    on = _mixer(p_melody=1.0)._generated(rng1, 4000)
    rng2.random()
    np.testing.assert_array_equal(on, augment.melody(rng2, 4000))


def test_melody_is_a_unit_rms_function_of_its_seed():
    xs = [augment.melody(np.random.default_rng(seed), 32000) for seed in (1, 1, 2)]
    for x in xs:
        assert x.shape == (32000,) and x.dtype == np.float32 and np.isfinite(x).all()
        assert abs(float(np.std(x)) - 1.0) < 1e-3
    np.testing.assert_array_equal(xs[0], xs[1])
    assert not np.array_equal(xs[0], xs[2])


def test_lead_voice_is_one_unbroken_tone_unlike_separate_notes():
    """The legato lead never stops between notes (what made held-out leads look like
    speech); voices of separate notes leave gaps and decay. Checked over 16 ms frames."""

    def quiet_share(x):
        rms = np.sqrt(np.mean(x[: x.size // 256 * 256].reshape(-1, 256) ** 2, axis=1))
        return float(np.mean(rms < 0.1 * np.median(rms)))

    scale = (0, 2, 4, 5, 7, 9, 11)
    for seed in range(5):
        lead = augment.lead_voice(np.random.default_rng(seed), 48000, 60, scale)
        assert np.isfinite(lead).all() and quiet_share(lead) == 0.0
    notes = [augment.note_voice(np.random.default_rng(s), 48000, 60, scale) for s in range(20)]
    assert max(quiet_share(x) for x in notes) > 0.05


def test_harmonics_recurrence_equals_the_sines():
    """The synthetic voices' harmonics come from a recurrence, not one sine each: over a
    6 s glide, every harmonic matches sin(k * phase)."""
    f = np.linspace(80.0, 660.0, 96000)
    phase = 2 * np.pi * np.cumsum(f) / 16000
    for k, wave in augment._harmonics(phase, 30):
        np.testing.assert_allclose(wave, np.sin(k * phase), atol=1e-9)
    assert k == 30


def test_change_speed_resamples_to_the_asked_length():
    t = np.arange(16000) / 16000
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = augment.change_speed(x[:12000], 16000)  # 0.75x: the tone drops to 330 Hz
    assert y.shape == (16000,) and y.dtype == np.float32
    peak = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / y.size
    assert abs(peak - 330) < 3


def test_capped_calibration_trades_f1_for_fewer_false_alarms():
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 50))
    labels[:10, 10:40] = 1  # 10 examples with speech, 10 speech-free
    probs = np.where(
        labels > 0, rng.uniform(0.3, 1.0, labels.shape), rng.uniform(0, 0.5, labels.shape)
    )
    probs[10:] = rng.uniform(0, 0.8, (10, 50))  # music-like: louder than the gaps between words
    free_fa = lambda t: np.mean(probs[10:] >= t)  # noqa: E731
    t_f1 = best_f1_threshold(probs, labels)
    t_cap = best_f1_threshold(probs, labels, max_false_alarm=0.01)
    assert free_fa(t_f1) > 0.01 >= free_fa(t_cap)
    assert t_cap > t_f1
    # An unreachable cap falls back to the most conservative threshold.
    assert best_f1_threshold(probs, labels, max_false_alarm=-1.0) == CALIBRATION_RANGE[1]


def test_calibration_threshold_is_exact_not_a_grid_point():
    """Every threshold a brute-force search tries is no better than the one chosen (same
    cap), and the chosen one meets the cap; a 0.01 grid would miss optima between points."""
    rng = np.random.default_rng(1)
    labels = np.zeros((30, 40))
    labels[:20, 5:30] = 1
    logits = rng.normal(np.where(labels > 0, 1.0, -2.5), 1.2)
    probs = 1 / (1 + np.exp(-logits))
    free = probs[20:]
    for cap in (None, 0.02, 0.05):
        t = best_f1_threshold(probs, labels, cap)
        assert cap is None or np.mean(free >= t) <= cap
        best = frame_metrics(probs, labels, t, with_auc=False)["f1"]
        for u in np.unique(probs):  # every distinct P is a threshold a search could pick
            if CALIBRATION_RANGE[0] <= u <= CALIBRATION_RANGE[1] and (
                cap is None or np.mean(free >= u) <= cap
            ):
                assert frame_metrics(probs, labels, u, with_auc=False)["f1"] <= best + 1e-12


def test_calibrate_moves_the_chosen_threshold_to_exactly_one_half():
    """After the logit shift, P >= 0.5 calls exactly the frames that P >= t called."""
    torch.manual_seed(0)
    model = VadNet(ModelConfig(a_channels=8, b_channels=8, f_hidden=8)).eval()
    x = torch.randn(12, 256 * 60) * torch.linspace(0.001, 0.3, 12)[:, None]
    with torch.no_grad():
        probs = model(x).numpy()
    labels = (np.arange(probs.shape[1]) % 7 < 3) * np.ones_like(probs)
    labels[8:] = 0  # four speech-free examples for the cap
    info = calibrate(model, probs, labels, max_false_alarm=0.2)
    with torch.no_grad():
        after = model(x).numpy()
    t = info["dev_f1_threshold_before"]
    assert np.array_equal(probs >= t, after >= 0.5)
    assert np.mean(after[8:] >= 0.5) <= 0.2


def test_hard_negative_loss_adds_the_hardest_non_speech_frames():
    from vadnet.model.training.train import frame_loss

    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
    logits = torch.tensor([[2.0, -3.0, 4.0, 0.0, -1.0]])  # frame 2 is a confident false alarm
    plain = F.binary_cross_entropy_with_logits(logits, labels)
    assert torch.allclose(frame_loss(logits, labels), plain)
    # a quarter of the 4 non-speech frames: the hardest one only, at logit 4
    hardest = F.binary_cross_entropy_with_logits(torch.tensor(4.0), torch.tensor(0.0))
    assert torch.allclose(frame_loss(logits, labels, 0.25, 2.0), plain + 2.0 * hardest)
    # its gradient goes to the false alarm, not to the easy negatives
    x = logits.clone().requires_grad_(True)
    (frame_loss(x, labels, 0.25, 2.0) - F.binary_cross_entropy_with_logits(x, labels)).backward()
    assert x.grad[0, 2] > 0 and torch.count_nonzero(x.grad) == 1


def test_far_negatives_are_mined_only_away_from_speech():
    """With a margin of 2 frames, the confident false alarm next to speech (frame 2) is not
    a far negative; the one 4 frames away (frame 5) is, and nothing within 2 frames of an
    ignored frame is. The far term adds to the plain hard-negative term."""
    from vadnet.model.training.labels import IGNORE
    from vadnet.model.training.train import frame_loss

    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, IGNORE]])
    logits = torch.tensor([[2.0, -3.0, 5.0, -2.0, -4.0, 3.0, -2.0, 0.0, 6.0, 0.0]])
    plain = frame_loss(logits, labels)
    bce0 = lambda v: F.binary_cross_entropy_with_logits(torch.tensor(v), torch.zeros(len(v)))  # noqa: E731
    # far from speech: frames 3..6 (7 and 8 are within 2 of the ignored frame 9); a quarter
    # of 4 is the hardest one, frame 5 at logit 3
    far = frame_loss(logits, labels, 0.0, 2.0, far_negative_fraction=0.25, margin_frames=2)
    assert torch.allclose(far, plain + 2.0 * bce0([3.0]))
    # the plain term mines every non-speech frame: a quarter of 8 is frames 8 and 2
    both = frame_loss(logits, labels, 0.25, 1.0, far_negative_fraction=0.25, margin_frames=2)
    assert torch.allclose(both, plain + bce0([6.0, 5.0]).mean() + bce0([3.0]))
    x = logits.clone().requires_grad_(True)
    (frame_loss(x, labels, 0.0, 1.0, 0.25, 2) - frame_loss(x, labels)).backward()
    assert x.grad[0, 5] > 0 and torch.count_nonzero(x.grad) == 1


def test_smoothness_counts_only_where_the_label_holds():
    """The term is the mean |P(t) - P(t-1)| over neighbouring frames with the same label:
    the jump across the speech edge (frames 1-2) and the pairs touching the ignored frame
    are left out, and its gradient pulls the lone spike (frame 4) toward its neighbours."""
    from vadnet.model.training.labels import IGNORE
    from vadnet.model.training.train import frame_loss, label_steady_change

    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, IGNORE, 0.0]])
    logits = torch.tensor([[3.0, 2.0, -3.0, -3.0, 2.0, -3.0, 5.0, -3.0]])
    p = torch.sigmoid(logits)[0]
    # steady pairs: (0,1), (2,3), (3,4), (4,5); (1,2) crosses the edge, (5,6), (6,7) the ignore
    want = torch.stack([p[1] - p[0], p[3] - p[2], p[4] - p[3], p[5] - p[4]]).abs().mean()
    assert torch.allclose(label_steady_change(logits, labels), want)
    plain = frame_loss(logits, labels)
    assert torch.allclose(frame_loss(logits, labels, smoothness_weight=0.5), plain + 0.5 * want)
    x = logits.clone().requires_grad_(True)
    label_steady_change(x, labels).backward()
    assert x.grad[0, 4] > 0 and x.grad[0, 6] == 0  # the spike goes down; ignored is untouched
    # no steady pair (one frame, or every pair ignored or crossing): zero, not NaN
    assert label_steady_change(logits[:, :1], labels[:, :1]) == 0
    assert label_steady_change(logits[:, 5:7], labels[:, 5:7]) == 0


def test_tail_rank_loss_weighs_only_speech_below_the_top_far_negatives():
    """The term is the mean softplus(n - s) over speech frames s and the top share of the far
    negatives n: a negative near speech (frame 2) is not a candidate, and with a fraction of
    a quarter of 4 far negatives only the highest (frame 5) is ranked against. Its gradient
    pushes that negative down and the speech frames up, the weaker one harder."""
    from vadnet.model.training.labels import IGNORE
    from vadnet.model.training.train import far_from_speech, frame_loss, tail_rank_loss

    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, IGNORE]])
    logits = torch.tensor([[2.0, -1.0, 5.0, -2.0, -4.0, 3.0, -2.0, 0.0, 6.0, 0.0]])
    far = far_from_speech(labels, 2)  # frames 4..6
    want = F.softplus(torch.tensor([3.0 - 2.0, 3.0 + 1.0])).mean()
    assert torch.allclose(tail_rank_loss(logits, labels, far, 0.25), want)
    plain = frame_loss(logits, labels, margin_frames=2)
    ranked = frame_loss(
        logits, labels, margin_frames=2, rank_weight=0.5, rank_negative_fraction=0.25
    )
    assert torch.allclose(ranked, plain + 0.5 * want)
    x = logits.clone().requires_grad_(True)
    tail_rank_loss(x, labels, far, 0.25).backward()
    assert x.grad[0, 5] > 0 and x.grad[0, 1] < x.grad[0, 0] < 0
    assert torch.count_nonzero(x.grad) == 3
    # a tiny share still ranks against the single highest far negative
    assert torch.allclose(tail_rank_loss(logits, labels, far, 1e-6), want)
    # no speech or no candidate: zero, not NaN
    assert tail_rank_loss(logits, torch.zeros_like(labels), far, 0.25) == 0
    assert tail_rank_loss(logits, labels, torch.zeros_like(far), 0.25) == 0


def test_rank_options_are_checked():
    from vadnet.model.training.train import TrainConfig

    for bad in (
        {"rank_weight": -1.0},
        {"rank_weight": float("nan")},
        {"rank_negative_fraction": 0.0},
    ):
        with pytest.raises(InvalidInputError, match="rank_weight must be >= 0"):
            TrainConfig(**bad)


def test_smoothness_and_model_options_are_checked():
    from vadnet.model.training.train import TrainConfig

    for bad in (-0.1, float("nan")):
        with pytest.raises(InvalidInputError, match="smoothness_weight must be >= 0"):
            TrainConfig(smoothness_weight=bad)
    # the network's own checks run before any data loads, for every caller
    with pytest.raises(InvalidInputError, match="b_channels"):
        TrainConfig(model={"b_channels": 0})
    with pytest.raises(InvalidInputError, match="model options"):
        TrainConfig(model={"no_such_option": 1})


def test_far_negative_options_are_checked():
    from vadnet.model.training.train import TrainConfig

    with pytest.raises(InvalidInputError, match="far_negative_fraction"):
        TrainConfig(far_negative_fraction=2.0)
    with pytest.raises(InvalidInputError, match="far_negative_margin_ms"):
        TrainConfig(far_negative_margin_ms=-5)


def test_hard_negative_options_are_checked():
    from vadnet.model.training.train import TrainConfig

    with pytest.raises(InvalidInputError, match="hard_negative_fraction"):
        TrainConfig(hard_negative_fraction=1.5)
    with pytest.raises(InvalidInputError, match="hard_negative_weight"):
        TrainConfig(hard_negative_weight=-1)


def test_p_melody_is_checked_where_the_mix_is_made():
    with pytest.raises(InvalidInputError, match="p_melody"):
        MixConfig(p_melody=1.5)
    with pytest.raises(InvalidInputError, match="p_music_gate must be in"):
        MixConfig(p_music_gate=-0.1)


def test_music_gate_cuts_recorded_music_only_and_draws_nothing_when_off():
    """p_music_gate=1 gates every recorded music background and nothing else; at 0 (the
    dev protocol) the random stream is the one a mixer without the gate draws."""
    common = {"p_speed": 0.0, "p_two_backgrounds": 0.0}
    rngs = [np.random.default_rng(3) for _ in range(3)]
    off = _mixer(music_share=1.0, p_music_gate=0.0, **common)._recorded(rngs[0], 16000)
    sfx = _mixer(music_share=0.0, p_music_gate=1.0, **common)._recorded(rngs[1], 16000)
    on = _mixer(music_share=1.0, p_music_gate=1.0, **common)._recorded(rngs[2], 16000)
    # the test clips are constant signals: ungated they stay constant
    assert np.ptp(off) == 0.0 and np.ptp(sfx) == 0.0
    assert np.ptp(on) > 0.5 and abs(augment.rms(on) - 1.0) < 1e-3
    # off, the draws are exactly the ungated ones: kind, source, clip, start
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    _mixer(music_share=1.0, p_music_gate=0.0, **common)._recorded(a, 16000)
    b.random(), b.integers(2), b.integers(1), b.integers(0, 1)
    assert a.random() == b.random()


def test_rhythmic_gate_opens_40_to_90_percent_of_each_beat():
    x = np.ones(32000, np.float32)
    for seed in range(10):
        g = augment.rhythmic_gate(np.random.default_rng(seed), x)
        assert g.shape == x.shape and g.dtype == np.float32
        assert g.max() == pytest.approx(1.0) and g.min() <= 0.3 + 1e-6
        assert 0.35 <= np.mean(g > 0.65) <= 0.95


def test_loss_skips_ignored_frames():
    from vadnet.model.training.labels import IGNORE
    from vadnet.model.training.train import frame_loss

    labels = torch.tensor([[1.0, IGNORE, 0.0, 0.0]])
    logits = torch.tensor([[2.0, -5.0, 3.0, -1.0]], requires_grad=True)
    counted = F.binary_cross_entropy_with_logits(logits[:, [0, 2, 3]], labels[:, [0, 2, 3]])
    assert torch.allclose(frame_loss(logits, labels), counted)
    # the hardest non-speech frame is frame 2 (logit 3), never the ignored speech frame
    hardest = F.binary_cross_entropy_with_logits(torch.tensor(3.0), torch.tensor(0.0))
    assert torch.allclose(frame_loss(logits, labels, 0.5, 1.0), counted + hardest)
    frame_loss(logits, labels, 0.5, 1.0).backward()
    assert logits.grad[0, 1] == 0 and torch.count_nonzero(logits.grad) == 3


def test_buried_speech_changes_labels_only_not_the_audio():
    """buried_snr_db leaves the random stream and the mixture as they were."""
    from vadnet.model.training.labels import IGNORE

    speech = _Clips([{"source": "asterisk-en", "speaker": "a"}])
    n = speech.length // 256 * 256  # whole frames, as clip_labels has
    speech.clip = lambda i: np.random.default_rng(1).standard_normal(n).astype(np.float32)
    noise = _Clips([{"source": "m1", "kind": "music"}])
    noise.clip = lambda i: np.random.default_rng(2).standard_normal(16000).astype(np.float32)
    mix = {"p_no_speech": 0.0, "p_clean": 0.0, "snr_db": (-5.0, -5.0), "p_dropout": 0.0}
    plain = Mixer(speech, noise, MixConfig(**mix))
    marked = Mixer(speech, noise, MixConfig(**mix, buried_snr_db=10.0))
    (x1, y1), (x2, y2) = (m.example(np.random.default_rng(3)) for m in (plain, marked))
    assert np.array_equal(x1, x2)
    assert set(np.unique(y1)) <= {0.0, 1.0} and (y2 == IGNORE).any()
    assert np.array_equal(y2 == IGNORE, (y1 == 1) & (y2 != 1))


def test_edge_overhang_counts_speech_called_past_each_labelled_edge():
    """Late frames: non-speech after an offset called speech, per offset; early: before
    an onset, per onset. Each non-speech frame goes to its nearer speech frame, and only
    frames within the window count."""
    from vadnet.model.training.metrics import edge_overhang

    labels = np.array([[0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0]], float)
    probs = np.array([[0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]], float)
    # late: frames 6, 7 (after the offset at 5) and 15 (after 14) over 2 offsets;
    # early: frames 2 (before 3) and 12 (before 13) over 2 onsets
    assert edge_overhang(probs, labels, 0.5, window_frames=3) == {
        "late_frames": 1.5,
        "early_frames": 1.0,
    }
    # frame 7 is 2 frames past its offset: outside a 1-frame window
    assert edge_overhang(probs, labels, 0.5, window_frames=1)["late_frames"] == 1.0
    # a call of speech far from any speech is a false alarm, not an overhang
    far = np.zeros((1, 40))
    far[0, 30] = 1.0
    lab = np.zeros((1, 40))
    lab[0, 2:5] = 1.0
    assert edge_overhang(far, lab, 0.5) == {"late_frames": 0.0, "early_frames": 0.0}
    with pytest.raises(InvalidInputError, match="differ"):
        edge_overhang(probs[:, :5], labels)


class _SizedClips(_Clips):
    """Speech clips whose length depends on their source: 'big' clips are 9x 'small' ones."""

    def clip(self, i):
        n = 9 * self.length if self.clips[i]["source"] == "big" else self.length
        return np.zeros(n, np.float32)


def _speech_shares(weighting, draws=6000):
    speech = _SizedClips([{"source": "big"}] + [{"source": "small"}] * 2)
    mixer = Mixer(speech, None, MixConfig(p_synthetic=0.0, speech_weighting=weighting))
    rng = np.random.default_rng(0)
    return np.mean([speech.clips[mixer._pick_speech(rng)]["source"] == "big" for _ in range(draws)])


def test_p_synthetic_is_the_share_of_synthetic_speech_draws():
    speech = _Clips([{"source": "espeak-ng"}, {"source": "tuxpaint"}])
    rng = np.random.default_rng(0)
    for p in (0.0, 0.1, 0.6):
        mixer = Mixer(speech, None, MixConfig(p_synthetic=p))
        picks = [mixer._pick_speech(rng) for _ in range(4000)]
        assert abs(np.mean(picks) - (1 - p)) < 0.03  # clip 1 is the real one
    with pytest.raises(InvalidInputError, match=r"p_synthetic must be in \[0, 1\], got 1.5"):
        MixConfig(p_synthetic=1.5)


def test_speech_weighting_shares_draws_by_source_or_by_root_of_its_audio():
    # 'big' holds 9 units of audio, 'small' 2: uniform 1/2, square root 3 / (3 + sqrt 2).
    assert abs(_speech_shares("uniform") - 0.5) < 0.03
    assert abs(_speech_shares("sqrt_hours") - 3 / (3 + np.sqrt(2))) < 0.03
    with pytest.raises(ValueError, match="speech_weighting must be one of uniform, sqrt_hours"):
        MixConfig(speech_weighting="hours")


def test_no_speech_share_sets_the_speech_free_mixtures():
    """``p_no_speech`` is the share of mixtures without a word in them (0 and 1 are the
    ends), and it is range-checked like the other shares."""
    rng = np.random.default_rng(0)
    speech = _Clips([{"source": "asterisk-en", "speaker": "a"}], length=62 * 256)
    noise = _Clips([{"source": "m1", "kind": "music"}])
    for p, lo, hi in ((0.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.35, 0.65)):
        mixer = Mixer(speech, noise, MixConfig(p_no_speech=p, p_dropout=0.0))
        with_speech = np.mean([mixer.example(rng)[1].any() for _ in range(60)])
        assert lo <= with_speech <= hi, (p, with_speech)
    with pytest.raises(InvalidInputError, match="p_no_speech must be in"):
        MixConfig(p_no_speech=1.5)


def test_telephone_channel_options_are_checked():
    with pytest.raises(InvalidInputError, match="telephone_orders must be 1 to 10"):
        MixConfig(telephone_orders=(4, 0))
    with pytest.raises(InvalidInputError, match="telephone_low_cut_hz must be"):
        MixConfig(telephone_low_cut_hz=(400.0, 200.0))
    with pytest.raises(InvalidInputError, match="p_telephone must be in"):
        MixConfig(p_telephone=1.2)
    # a checkpoint's train_config stores the mix as JSON lists
    assert MixConfig(telephone_orders=[4, 8]).telephone_orders == (4, 8)
    assert MixConfig(snr_db=[0, 15]).snr_db == (0, 15)
    with pytest.raises(InvalidInputError, match="snr_db must be"):
        MixConfig(snr_db=(-40.0, 10.0))


def test_telephone_order_sets_the_skirt_and_one_order_draws_nothing_extra():
    """A steeper band-pass takes more of a 150 Hz hum away; one order (the dev protocol's
    4) draws nothing for it, so the random stream and the dev clips stay as they were."""
    t = np.arange(16000) / 16000
    hum = (0.1 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    low = (300.0, 300.0)

    def level(order):
        y = augment.telephone(np.random.default_rng(1), hum, (order,), low)
        return augment.rms(y[2000:-2000])

    assert level(8) < 0.02 * level(2)
    assert level(2) < augment.rms(hum)

    a, b = np.random.default_rng(5), np.random.default_rng(5)
    augment.telephone(a, hum)
    augment.telephone(b, hum, (8,), (200.0, 400.0))
    assert a.random() == b.random()
    c, d = np.random.default_rng(5), np.random.default_rng(5)
    augment.telephone(c, hum, (4, 6, 8))
    augment.telephone(d, hum)
    assert c.random() != d.random()  # several orders: one more draw


def _band_level(y: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(y[4000:-4000])) ** 2
    hz = np.fft.rfftfreq(y[4000:-4000].size, 1 / 16000)
    return float(spectrum[(hz >= lo) & (hz <= hi)].sum())


def test_band_limit_keeps_the_band_and_cuts_the_lows_and_highs():
    """A steep band-pass at 300-3400 Hz: a 1 kHz tone passes, tones at 120 Hz and 6 kHz
    (a voice's fundamental, a fricative's hiss) are cut at least 25 dB, whichever order."""
    t = np.arange(32000) / 16000
    tones = {f: np.sin(2 * np.pi * f * t) for f in (120, 1000, 6000)}
    x = sum(tones.values()).astype(np.float32)
    for seed in range(6):  # several draws of the order
        y = augment.band_limit(np.random.default_rng(seed), x, (300.0, 300.0), (3400.0, 3400.0))
        kept = _band_level(y, 950, 1050) / _band_level(x, 950, 1050)
        assert 0.8 < kept < 1.2
        for f in (120, 6000):
            assert _band_level(y, f - 50, f + 50) < 10**-2.5 * _band_level(x, f - 50, f + 50)


def test_band_limit_share_and_its_checks():
    """At p_band_limit 1 every mixture loses its lows, and the options are checked."""
    speech = _Clips([{"source": "asterisk-en", "speaker": "a"}], length=62 * 256)
    noise = _Clips([{"source": "m1", "kind": "music"}])
    noise.clip = lambda i: np.random.default_rng(i).standard_normal(16000).astype(np.float32)
    quiet = {
        "p_eq": 0.0,
        "p_dc": 0.0,
        "p_telephone": 0.0,
        "p_clip": 0.0,
        "p_silent_background": 0.0,
    }
    off = Mixer(speech, noise, MixConfig(**quiet))
    on = Mixer(speech, noise, MixConfig(**quiet, p_band_limit=1.0, band_low_hz=(400.0, 450.0)))
    for k in range(5):
        (x0, _), (x1, _) = (m.example(np.random.default_rng(k)) for m in (off, on))
        low = _band_level(x1, 20, 200) / _band_level(x1, 1000, 2000)
        assert low < 0.1 * _band_level(x0, 20, 200) / _band_level(x0, 1000, 2000)
    with pytest.raises(InvalidInputError, match="band_low_hz and band_high_hz must be"):
        MixConfig(band_low_hz=(400.0, 3500.0))
    with pytest.raises(InvalidInputError, match="p_band_limit must be in"):
        MixConfig(p_band_limit=-0.1)
    assert MixConfig(band_high_hz=[3000, 4000]).band_high_hz == (3000, 4000)


def test_sound_events_are_isolated_with_quiet_gaps():
    """Each event is a clip (or a <= 3 s excerpt of a long one) at its own level, with gaps
    far below the events between them; the same seed gives the same track."""
    n = 20 * 16000
    clips = [np.ones(8000, np.float32), np.ones(80000, np.float32)]  # 0.5 s and 5 s
    for seed in range(5):
        pick = np.random.default_rng(100 + seed)
        x = augment.sound_events(
            np.random.default_rng(seed), lambda p=pick: clips[p.integers(2)], n
        )
        assert x.shape == (n,) and x.dtype == np.float32
        loud = np.abs(x) > 0.05  # events are at 1 +- 10 dB, the floor 35-70 dB under
        assert 0.05 < loud.mean() < 0.95
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, loud.astype(np.int8), 0])))[::2]
        assert runs.max() <= 3 * 16000 + 1  # the 5 s clip came as an excerpt
        assert np.abs(x[~loud]).max() < 0.05
    again = augment.sound_events(np.random.default_rng(0), lambda: clips[0], n)
    assert np.array_equal(
        again, augment.sound_events(np.random.default_rng(0), lambda: clips[0], n)
    )


def test_p_events_lays_effects_and_ambient_as_events_never_music():
    common = {"p_speed": 0.0, "p_two_backgrounds": 0.0}
    rng = np.random.default_rng(5)
    sfx = _mixer(music_share=0.0, p_events=1.0, **common)._recorded(rng, 6 * 16000)
    music = _mixer(music_share=1.0, p_events=1.0, **common)._recorded(rng, 6 * 16000)
    # the test clips are constant signals: tiled they stay constant, as events they are not
    assert np.ptp(music) == 0.0
    assert np.ptp(sfx) > 0.5 and abs(augment.rms(sfx) - 1.0) < 1e-3
    assert np.mean(np.abs(sfx) < 0.05 * np.abs(sfx).max()) > 0.02  # quiet gaps
    # off (the dev protocol), the draws are exactly those of a mixer without events
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    _mixer(music_share=0.0, p_events=0.0, **common)._recorded(a, 16000)
    b.random(), b.integers(2), b.integers(3), b.integers(1), b.integers(0, 1)
    assert a.random() == b.random()
    with pytest.raises(InvalidInputError, match=r"p_events must be in \[0, 1\], got 2"):
        MixConfig(p_events=2)
