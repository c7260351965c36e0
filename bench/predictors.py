"""Compiled predictors versus ``Booster.predict``: ``python -m bench predictors`` (about a minute).

Trains the model ``featurestream train`` publishes (its default run: 300k generated events, 200
rounds of 15 leaves) on a history replayed into a training set, then times each backend on this
machine, single-threaded: one row per call (the ``/v1/predict`` path; µs per call, over 2,000
different rows) and 1,000 rows per call (the scoring job's micro-batch; ms per call), the best of
five repeats each; the one-off compile (or convert) time and the artefact's size; and the
largest |difference| from ``Booster.predict`` over the real rows (missing values as NaN) and over
probe vectors (each split threshold, the floats either side of it, NaN, 0, random values).

Backends: ``lightgbm`` (Booster.predict, the reference), ``lleaves`` (what the registry serves,
:mod:`udfs.scoring.compiled`), ``tl2cgen`` (Treelite's C code, built with gcc) and ``onnxruntime``
(``onnxmltools.convert_lightgbm``). The last two are not dependencies: onnx needs a protobuf and
scikit-learn a cloudpickle that Apache Beam's pins exclude. Measure them in another virtualenv::

    python3 -m venv /tmp/predictors && /tmp/predictors/bin/pip install lightgbm numpy \\
        treelite==4.8.1 tl2cgen==1.0.0 onnxmltools==1.16.0 onnxruntime==1.32.0
    python -m bench predictors --compare-python /tmp/predictors/bin/python

which runs this file there (``python bench/predictors.py MODEL VECTORS.npy``: JSON rows on
the last line of stdout) on the same model and vectors; featurestream is imported only to train.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

SINGLE_ROWS = 2_000
BATCH = 1_000
REPEATS = 5
PROBE_ROWS = 20_000
Predict = Callable[[np.ndarray], np.ndarray]


def predictors_section(compare_python: str | None) -> list[dict[str, Any]]:
    """Train the model, measure every backend importable here (and, with ``compare_python``,
    the others in that interpreter); one row per backend."""
    with tempfile.TemporaryDirectory(prefix="featurestream-predictors-") as tmp:
        model_file, vectors_file = _train(Path(tmp))
        vectors = np.load(vectors_file)
        rows = measure(model_file, vectors, ("lightgbm", "lleaves"))
        if compare_python:
            done = subprocess.run([compare_python, __file__, str(model_file), str(vectors_file)],
                                  capture_output=True, text=True, check=True)
            # The last line: TL2cgen's compiler logs to stdout too.
            rows += [r for r in json.loads(done.stdout.splitlines()[-1])
                     if r["backend"] not in {"lightgbm", "lleaves"}]
    return rows


def measure(model_file: Path, vectors: np.ndarray, backends: tuple[str, ...]
            ) -> list[dict[str, Any]]:
    """The figures of each of ``backends`` on ``vectors`` (real rows first, then probes)."""
    booster = lgb.Booster(model_file=str(model_file))
    reference = np.asarray(booster.predict(vectors, num_threads=1))
    real = len(vectors) - PROBE_ROWS
    singles = [np.ascontiguousarray(vectors[i:i + 1]) for i in
               np.random.default_rng(0).permutation(len(vectors))[:SINGLE_ROWS]]
    batch = np.ascontiguousarray(vectors[:BATCH])
    rows: list[dict[str, Any]] = []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"featurestream-{backend}-") as tmp:
            try:
                started = time.perf_counter()
                predict, artefact = BUILDERS[backend](model_file, booster, Path(tmp))
                compile_s = time.perf_counter() - started
            except ImportError as exc:
                rows.append({"backend": backend, "missing": str(exc)})
                continue
            difference = np.abs(predict(vectors) - reference)
            rows.append({
                "backend": backend,
                "single_row_us": _best(predict, singles) / SINGLE_ROWS * 1e6,
                "batch_ms": _best(predict, [batch]) * 1e3,
                "compile_s": compile_s,
                "artefact_bytes": artefact.stat().st_size if artefact else 0,
                "max_diff_real": float(np.max(difference[:real])),  # NaN if one is NaN
                "max_diff_probes": float(np.max(difference[real:])),
            })
    return rows


def _best(predict: Predict, matrices: list[np.ndarray]) -> float:
    """Seconds to predict every one of ``matrices``: the fastest of :data:`REPEATS` runs, after
    one warm-up."""
    times = []
    for _ in range(REPEATS + 1):
        started = time.perf_counter()
        for matrix in matrices:
            predict(matrix)
        times.append(time.perf_counter() - started)
    return min(times[1:])


def _lightgbm(model_file: Path, booster: lgb.Booster, tmp: Path) -> tuple[Predict, Path | None]:
    return (lambda m: np.asarray(booster.predict(m, num_threads=1))), None


def _lleaves(model_file: Path, booster: lgb.Booster, tmp: Path) -> tuple[Predict, Path | None]:
    import lleaves

    from featurestream.udfs.scoring.compiled import LleavesPredictor

    artefact = tmp / "model.o"
    model = lleaves.Model(model_file=str(model_file))
    model.compile(cache=str(artefact))
    return LleavesPredictor(model).predict, artefact


def _tl2cgen(model_file: Path, booster: lgb.Booster, tmp: Path) -> tuple[Predict, Path | None]:
    tl2cgen, treelite = _optional("tl2cgen"), _optional("treelite")
    artefact = tmp / "model.so"
    tl2cgen.export_lib(treelite.frontend.load_lightgbm_model(str(model_file)), toolchain="gcc",
                       libpath=str(artefact), nthread=1)
    predictor = tl2cgen.Predictor(str(artefact), nthread=1)
    return (lambda m: predictor.predict(tl2cgen.DMatrix(m, dtype="float64")).reshape(len(m)),
            artefact)


def _onnxruntime(model_file: Path, booster: lgb.Booster, tmp: Path
                 ) -> tuple[Predict, Path | None]:
    onnxmltools, onnxruntime = _optional("onnxmltools"), _optional("onnxruntime")
    tensor = _optional("onnxmltools.convert.common.data_types").FloatTensorType
    artefact = tmp / "model.onnx"
    model = onnxmltools.convert_lightgbm(
        booster, initial_types=[("x", tensor([None, booster.num_feature()]))],
        zipmap=False, target_opset=15)
    artefact.write_bytes(model.SerializeToString())
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(artefact), options,
                                           providers=["CPUExecutionProvider"])
    probabilities = session.get_outputs()[1].name
    return (lambda m: session.run([probabilities], {"x": m.astype(np.float32)})[0][:, 1],
            artefact)


def _optional(module: str) -> Any:
    """A module that is no dependency of featurestream (ImportError where it is missing)."""
    return importlib.import_module(module)


BUILDERS = {"lightgbm": _lightgbm, "lleaves": _lleaves, "tl2cgen": _tl2cgen,
            "onnxruntime": _onnxruntime}


def _train(directory: Path) -> tuple[Path, Path]:
    """``featurestream train``'s model on a replayed generated history, and the vectors to
    score: the training set's rows (NaN where a feature had no value), then probe vectors."""
    from featurestream.cli.train import TrainingRun, replay_history, train_from
    from featurestream.settings import Settings
    from featurestream.udfs.offline.training_set import read_training_set
    from featurestream.udfs.scoring.compiled import probe_vectors

    settings = Settings(home=directory / "home")
    definitions = settings.load_definitions()
    labels: dict[str, bool] = {}
    training_set = replay_history(settings, definitions, _history(definitions, labels),
                                  labels, directory)
    result = train_from(settings, str(training_set), None, TrainingRun(),
                        provenance={"bench": "predictors"})
    model_file = directory / "model.txt"
    model_file.write_text(result.model_text, encoding="utf-8")
    real = read_training_set(str(training_set), result.metadata.features).matrix
    probes = probe_vectors(result.model_text, real.shape[1], PROBE_ROWS)
    vectors_file = directory / "vectors.npy"
    np.save(vectors_file, np.vstack([real, probes]))
    return model_file, vectors_file


def _history(definitions: Any, labels: dict[str, bool]) -> Iterator[Any]:
    """``featurestream train``'s generated history (its default run), labels recorded."""
    from itertools import islice

    from featurestream.backfill.records import NO_TIMESTAMP, HistoryRecord, Position, json_value
    from featurestream.cli.train import TrainingRun
    from featurestream.devstack.generator import StreamConfig, generate_labelled_events
    from featurestream.udfs.contract.records import is_builtin

    run = TrainingRun()
    source = next(s for s in definitions.sources if is_builtin(s)).name
    config = StreamConfig(users=run.users, events_per_second=run.events_per_second, seed=run.seed)
    for number, (event, label) in enumerate(islice(generate_labelled_events(config), run.events)):
        labels[event.event_id] = label
        yield HistoryRecord(source, json_value(event._asdict()),
                            Position("generator", None, number), NO_TIMESTAMP)


def predictor_rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Table rows ``(what, figure, versus)`` for ``python -m bench``."""
    reference = next(r for r in rows if r["backend"] == "lightgbm")
    table = []
    for r in rows:
        if "missing" in r:
            table.append((f"predictor {r['backend']}", "not installed",
                          "see bench/predictors.py (--compare-python)"))
            continue
        table.append((f"predictor {r['backend']}: 1 row / 1,000 rows",
                      f"{r['single_row_us']:,.1f} us {r['batch_ms']:,.2f} ms",
                      f"{reference['single_row_us'] / r['single_row_us']:.1f}x / "
                      f"{reference['batch_ms'] / r['batch_ms']:.1f}x Booster.predict"))
        table.append((f"  compile {r['compile_s']:.2f} s, {r['artefact_bytes'] / 1024:,.0f} KiB;"
                      " max |diff| real / probes", f"{r['max_diff_real']:.1e} "
                      f"{r['max_diff_probes']:.1e}", "adopted only if <= 1e-9"))
    return table


def main(argv: list[str]) -> int:
    """``python bench/predictors.py MODEL VECTORS.npy``: every backend importable here, as
    JSON rows (for --compare-python)."""
    model_file, vectors_file = Path(argv[0]), Path(argv[1])
    backends = ("lightgbm", "tl2cgen", "onnxruntime")
    print(json.dumps(measure(model_file, np.load(vectors_file), backends)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
