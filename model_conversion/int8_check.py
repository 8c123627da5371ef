"""How much MobileNet v1 loses in post-training int8, before any training (diagnostic).

    python -m model_conversion.int8_check [--data ../shared/data]

The ImageNet-initialised network's pooled features (float32 Keras) against
its int8 conversion, on BCCD fields, calibrated on 200 cells either without
BCCD or from every source: the median cosine and relative error say whether
the loss comes from calibration coverage or from the network itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="/work/shared/data")
    args = parser.parse_args(argv)
    import keras
    import tensorflow as tf

    from model_conversion.cnn_crosssource import prepared_images
    from model_conversion.convert import convert_keras_model
    from model_conversion.embed import find_pretrained
    from model_conversion.mobilenet import PRETRAINED_FILE, build_mobilenet, load_pretrained
    from model_conversion.prepare import default_cache_dir
    from model_conversion.sources import load_all_sources

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    samples = load_all_sources(Path(args.data))
    x = prepared_images(samples, "field", 128, default_cache_dir())
    source = np.array([s.source for s in samples])
    model = build_mobilenet(128)
    load_pretrained(model, find_pretrained() / PRETRAINED_FILE)
    features = keras.Model(model.input, model.get_layer("gap").output, name="features")
    bccd = x[source == "bccd"][:150]
    reference = features.predict(bccd.astype(np.float32), verbose=0)
    rng = np.random.default_rng(0)
    from ai_edge_litert.interpreter import Interpreter
    for name, pool in (("calibrated without BCCD", source != "bccd"), ("calibrated on every source", source == source)):
        tflite = convert_keras_model(features, x[rng.choice(np.flatnonzero(pool), 200, replace=False)], quantize=True)
        interpreter = Interpreter(model_content=tflite, num_threads=1)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        scale, zero = out["quantization"]
        quantised = []
        for image in bccd:
            interpreter.set_tensor(inp["index"], image[None])
            interpreter.invoke()
            quantised.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale)
        q = np.array(quantised)
        cosine = (q * reference).sum(1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(reference, axis=1) + 1e-9)
        error = np.linalg.norm(q - reference, axis=1) / (np.linalg.norm(reference, axis=1) + 1e-9)
        print(f"{name}: median cosine {np.median(cosine):.4f}, median relative error {np.median(error):.4f}")


if __name__ == "__main__":
    main()
