"""Training smoke tests on tiny generated data: runs, is deterministic, resumes exactly."""

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from vadnet.model.checkpoint import load_model, read_checkpoint, weights_version
from vadnet.model.training.train import train

TINY = {"a_channels": 8, "b_channels": 8, "f_hidden": 8, "b_dilations": [1, 2]}


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    """speech/<speaker>/*.wav (voiced-like harmonic bursts with pauses) and noise/*.wav."""
    root = tmp_path_factory.mktemp("userdata")
    rng = np.random.default_rng(0)
    sr = 16000
    for spk in ("alice", "bob", "carol", "dave"):
        (root / "speech" / spk).mkdir(parents=True)
        for k in range(2):
            t = np.arange(int(sr * 2.5)) / sr
            f0 = rng.uniform(100, 220)
            voiced = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8))
            env = (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > 0) * (t > 0.4) * (t < 2.1)
            sf.write(
                root / "speech" / spk / f"u{k}.wav", (0.3 * voiced * env).astype(np.float32), sr
            )
    (root / "noise").mkdir()
    for k in range(3):
        sf.write(
            root / "noise" / f"n{k}.wav", (0.1 * rng.standard_normal(sr * 3)).astype(np.float32), sr
        )
    return root


def run(tmp, user_data, **kw):
    cfg = {
        "out_dir": str(tmp),
        "speech_dir": str(user_data / "speech"),
        "noise_dir": str(user_data / "noise"),
        "cache_dir": str(tmp.parent / "no-cache"),  # hermetic: never a developer's cache
        "init": "scratch",
        "model": TINY,
        "epochs": 2,
        "steps_per_epoch": 3,
        "batch_size": 4,
        "workers": 0,
        "dev_examples": 6,
        "calibration_examples": 12,
        "mix": {"example_s": 2.0},
    }
    cfg.update(kw)
    return train(cfg)


def weights(path):
    return read_checkpoint(path)["state_dict"]


def test_training_writes_everything_and_is_deterministic(tmp_path, user_data):
    final = run(tmp_path / "a", user_data)
    for name in ("vadnet.pt", "last.pt", "best.pt", "metrics.json", "curves.png"):
        assert (tmp_path / "a" / name).exists(), name
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]  # 0: before training
    assert {"auc", "f1", "miss_rate", "false_alarm_rate"} <= set(metrics["history"][-1]["dev"])
    assert "calibration" in metrics and metrics["calibration"]["examples"] == 12
    model = load_model(final)  # the checkpoint carries its config
    assert model.cfg.a_channels == 8
    # same seed, two worker processes instead of none: the very same weights
    again = run(tmp_path / "b", user_data, workers=2)
    for k, v in weights(final).items():
        assert torch.equal(v, weights(again)[k]), k


def test_resume_continues_exactly(tmp_path, user_data):
    straight = run(tmp_path / "s", user_data)
    run(tmp_path / "r", user_data, stop_after_epoch=1)
    assert not (tmp_path / "r" / "vadnet.pt").exists()
    resumed = run(tmp_path / "r", user_data)
    for k, v in weights(straight).items():
        assert torch.equal(v, weights(resumed)[k]), k
    # epoch 0 travels in last.pt: the resumed run reports it once, as a straight one does
    history = [json.loads((tmp_path / d / "metrics.json").read_text())["history"] for d in "sr"]
    assert [h["epoch"] for h in history[1]] == [0, 1, 2]
    assert history[0][0]["dev"] == history[1][0]["dev"]


def test_replay_runs_keeps_its_buffer_and_resumes_exactly(tmp_path, user_data):
    """--replay-fraction: the kept mixtures travel in last.pt, so a resumed run ends on
    the very weights of a straight one; and replay changes what is learnt."""
    opts = {"replay_fraction": 0.25, "replay_buffer": 5}
    straight = run(tmp_path / "s", user_data, **opts)
    kept = read_checkpoint(tmp_path / "s" / "last.pt")["replay"]
    assert kept["x"].shape[0] == 5 and kept["y"].shape == (5, kept["x"].shape[1] // 256)
    run(tmp_path / "r", user_data, stop_after_epoch=1, **opts)
    resumed = run(tmp_path / "r", user_data, **opts)
    for k, v in weights(straight).items():
        assert torch.equal(v, weights(resumed)[k]), k
    plain = run(tmp_path / "p", user_data)
    assert any(not torch.equal(v, weights(plain)[k]) for k, v in weights(straight).items())


def test_weight_average_is_kept_and_resumes_exactly(tmp_path, user_data):
    """--ema-decay: best.pt holds the average, not the last step's weights; the average
    travels in last.pt, so a resumed run ends on the very weights of a straight one."""
    opts = {"ema_decay": 0.5}
    run(tmp_path / "one", user_data, epochs=1, **opts)  # one epoch: best.pt is its end
    blob = read_checkpoint(tmp_path / "one" / "last.pt")
    assert blob["average"]["updates"] == 3
    average = blob["average"]["state_dict"]
    assert any(not torch.equal(v, average[k]) for k, v in blob["state_dict"].items())
    best = weights(tmp_path / "one" / "best.pt")
    assert all(torch.equal(v, average[k]) for k, v in best.items())
    straight = run(tmp_path / "s", user_data, **opts)
    run(tmp_path / "r", user_data, stop_after_epoch=1, **opts)
    resumed = run(tmp_path / "r", user_data, **opts)
    for k, v in weights(straight).items():
        assert torch.equal(v, weights(resumed)[k]), k


def test_different_seed_gives_different_weights(tmp_path, user_data):
    a = run(tmp_path / "a", user_data, epochs=1)
    b = run(tmp_path / "b", user_data, epochs=1, seed=1)
    assert any(not torch.equal(v, weights(b)[k]) for k, v in weights(a).items())
    # Same day, different weights: the versions differ in their digest, which is the
    # digest of the weights the file holds.
    va, vb = (read_checkpoint(p)["version"] for p in (a, b))
    assert re.fullmatch(r"\d{4}\.\d\d\.\d\d\+[0-9a-f]{8}", va) and va != vb
    assert va == weights_version(va, load_model(a))


def test_fine_tune_from_labelled_manifest_starts_from_bundled(tmp_path, user_data):
    wav = user_data / "speech" / "alice" / "u0.wav"
    manifest = tmp_path / "labels.csv"
    rows = [
        f"{wav},0.4,2.1",
        f"{user_data / 'speech' / 'bob' / 'u1.wav'},0.4,2.1",
        f"{user_data / 'noise' / 'n0.wav'},,",
    ]
    manifest.write_text("path,start_s,end_s\n" + "\n".join(rows) + "\n")
    final = run(
        tmp_path / "m",
        user_data,
        speech_dir=None,
        noise_dir=None,
        manifest=str(manifest),
        init="bundled",
        model={},
        epochs=1,
    )
    tuned, bundled = load_model(final), load_model()
    assert tuned.cfg == bundled.cfg
    assert not torch.equal(tuned.A.filters.weight, bundled.A.filters.weight)


def test_cli_defaults_match_train_config():
    from dataclasses import fields

    from vadnet.model.training.train import TrainConfig
    from vadnet.service.cmd_train import DEFAULTS

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    assert all(defaults[k] == v for k, v in DEFAULTS.items())
    # The size flags' help states ModelConfig's defaults.
    from vadnet.model.network import ModelConfig
    from vadnet.service.cmd_train import SIZE_FLAGS

    assert {k: d for k, _, d in SIZE_FLAGS} == {
        k: getattr(ModelConfig(), k) for k, _, _ in SIZE_FLAGS
    }


def test_dev_set_does_not_follow_the_training_mix(tmp_path, user_data):
    """Runs with different mixing recipes are scored on the same dev mixtures."""
    from vadnet.model.training.data import fixed_set
    from vadnet.model.training.train import DEV_MIX, TrainConfig, make_mixers

    def dev(mix):
        cfg = TrainConfig(
            out_dir=str(tmp_path),
            speech_dir=str(user_data / "speech"),
            noise_dir=str(user_data / "noise"),
            mix={"example_s": 2.0, **mix},
        )
        mixer = make_mixers(cfg)[1]
        return mixer, fixed_set(mixer, 6, 0)

    base, (x0, y0) = dev({})
    other, (x1, y1) = dev(
        {"p_generated_noise": 0.9, "music_share": 0.9, "p_speed": 1.0, "buried_snr_db": 10.0}
    )
    assert all(getattr(other.cfg, k) == v for k, v in DEV_MIX.items())
    assert base.cfg == other.cfg
    assert np.array_equal(x0, x1) and np.array_equal(y0, y1)


def test_training_with_buried_speech_left_out_of_the_loss(tmp_path, user_data):
    """--buried-snr-db: the loss skips IGNORE frames (a high floor marks many) and the run
    still learns: finite losses, dev scored on the untouched labels."""
    final = run(tmp_path / "b", user_data, mix={"example_s": 2.0, "buried_snr_db": 10.0})
    history = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert history[0]["train_loss"] is None  # epoch 0: the starting model, no step yet
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["dev_loss"]) for h in history[1:])
    cfg = json.loads(read_checkpoint(final)["train_config"])
    assert cfg["mix"]["buried_snr_db"] == 10.0
    from vadnet.model.training.labels import IGNORE
    from vadnet.model.training.train import TrainConfig, make_mixers

    mixer = make_mixers(TrainConfig.from_dict(cfg))[0]
    labels = np.concatenate([mixer.example(np.random.default_rng(i))[1] for i in range(20)])
    assert (labels == IGNORE).any() and (labels == 1).any()  # the floor did mark frames


def test_grow_b_appends_layers_to_the_init_checkpoint(tmp_path, user_data):
    """Stage 2's --grow-b: the run's checkpoints carry the grown config, and it resumes."""
    base = str(run(tmp_path / "base", user_data, epochs=1))
    grown = run(tmp_path / "g", user_data, init=base, epochs=1, grow_b_dilations=[4])
    assert load_model(base).cfg.b_dilations == (1, 2)
    assert load_model(grown).cfg.b_dilations == (1, 2, 4)
    run(tmp_path / "r", user_data, init=base, grow_b_dilations=[4], stop_after_epoch=1)
    resumed = run(tmp_path / "r", user_data, init=base, grow_b_dilations=[4], epochs=2)
    assert load_model(resumed).cfg.b_dilations == (1, 2, 4)


def test_calibration_draw_extends_the_dev_set(tmp_path, user_data):
    """fixed_blocks: the dev set's examples first, then more of the same random stream."""
    from vadnet.model.training.data import fixed_blocks, fixed_set
    from vadnet.model.training.train import TrainConfig, make_mixers

    cfg = TrainConfig(
        out_dir=str(tmp_path),
        speech_dir=str(user_data / "speech"),
        noise_dir=str(user_data / "noise"),
        mix={"example_s": 2.0},
    )
    mixer = make_mixers(cfg)[1]
    x6, y6 = fixed_set(mixer, 6, 3)
    blocks = list(fixed_blocks(mixer, 10, 3, block=4))
    assert [len(x) for x, _ in blocks] == [4, 4, 2]
    x10, y10 = (np.concatenate(p) for p in zip(*blocks, strict=True))
    assert np.array_equal(x10[:6], x6) and np.array_equal(y10[:6], y6)
    assert not np.array_equal(x10[6:8], x10[:2])  # more examples, not the same again


def test_cli_size_flags_reach_a_new_network(tmp_path, user_data, capsys):
    """`vadnet train --a-channels/--a-kernel/--b-channels/--f-hidden` size the network the
    run writes, and `--snr-db` reaches its mix (the error paths are in tests/test_cli.py)."""
    from vadnet.service.cli import main

    out = tmp_path / "sized"
    # fmt: off
    args = ["train", "--speech-dir", str(user_data / "speech"), "--noise-dir", str(user_data / "noise"),
            "--cache", str(tmp_path / "no-cache"), "--user-share", "1", "--init", "scratch",
            "--a-channels", "8", "--a-kernel", "128", "--b-channels", "8", "--f-hidden", "8",
            "--snr-db", "0", "12.5", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--workers", "0",
            "--dev-examples", "4", "--calibration-examples", "4", "--out", str(out)]
    # fmt: on
    assert main(args) == 0
    cfg = load_model(out / "vadnet.pt").cfg
    assert (cfg.a_channels, cfg.a_kernel, cfg.b_channels, cfg.f_hidden) == (8, 128, 8, 8)
    assert json.loads(read_checkpoint(out / "vadnet.pt")["train_config"])["mix"]["snr_db"] == [
        0.0,
        12.5,
    ]
    assert capsys.readouterr().out.strip().endswith("vadnet.pt")
