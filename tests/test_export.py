"""model/export.py: TorchScript and ONNX exports agree with the eager model on real audio."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from vadnet.model.audio import load_audio
from vadnet.model.errors import InvalidInputError
from vadnet.model.export import ExportableVad, export_model

TOL = 1e-4


@pytest.fixture(scope="module")
def speech(data_dir) -> np.ndarray:
    return load_audio(data_dir / "speech_en.wav").samples


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return {
        "torchscript": export_model(model, "torchscript", out / "vadnet.ts"),
        "onnx": export_model(model, "onnx", out / "vadnet.onnx"),
    }


def _batches(speech: np.ndarray):
    """Random-length slices of real speech, batches of 1-3 rows, plus the edge lengths."""
    rng = np.random.default_rng(0)
    for length in (3, 255, 256, 257):
        yield speech[None, 1000 : 1000 + length]
    for _ in range(3):
        b, length = int(rng.integers(1, 4)), int(rng.integers(512, 2 * 16000))
        starts = rng.integers(0, speech.size - length, size=b)
        yield np.stack([speech[s : s + length] for s in starts])


def _eager(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_wrapper_is_the_eager_forward(model, speech):
    wrapper = ExportableVad(model)
    for x in _batches(speech):
        with torch.no_grad():
            got = wrapper(torch.from_numpy(x)).numpy()
        ref = _eager(model, x)
        assert got.shape == ref.shape == (x.shape[0], -(-x.shape[1] // 256))
        assert np.abs(got - ref).max() <= 1e-6


def test_torchscript_parity(model, speech, exported):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        ts = torch.jit.load(str(exported["torchscript"]))
    for x in _batches(speech):
        with torch.no_grad():
            got = ts(torch.from_numpy(x)).numpy()
        ref = _eager(model, x)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= TOL


def test_onnxruntime_parity(model, speech, exported):
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(exported["onnx"])).graph
    assert [i.name for i in graph.input] == ["audio"]
    assert [o.name for o in graph.output] == ["probs"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param and not d.dim_value for d in dims)  # batch and length are dynamic

    sess = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    for x in _batches(speech):
        got = sess.run(None, {"audio": x})[0]
        ref = _eager(model, x)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= TOL


def test_export_errors(model, tmp_path):
    with pytest.raises(InvalidInputError, match="torchscript, onnx"):
        export_model(model, "tflite", tmp_path / "m.tflite")
    with pytest.raises(InvalidInputError, match="does not exist"):
        export_model(model, "torchscript", tmp_path / "no" / "such" / "m.ts")
