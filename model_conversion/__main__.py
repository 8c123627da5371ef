"""python -m model_conversion train|convert|evaluate|crosssource|cnncross|cnnfit|domaincheck|scales|maskiou — the model pipeline.

    python -m model_conversion train --data ../shared/data --out runs/w025_s96
    python -m model_conversion convert --run runs/w025_s96 --out models/
    python -m model_conversion evaluate --run runs/w025_s96 --model models/allscope_blast_int8.tflite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_conversion.augment import DEFAULT_RECIPE, RECIPES


def _default_data() -> str:
    from model_conversion.data import find_shared_data

    return str(find_shared_data() or Path("../shared/data"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_conversion", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or resume) a run")
    t.add_argument("--data", default=_default_data(), help="the shared data folder (default ../shared/data)")
    t.add_argument("--out", required=True, type=Path, help="run folder (resumes when it exists)")
    t.add_argument("--size", type=int, default=96, help="input size in pixels (default 96)")
    t.add_argument("--width", type=float, default=0.25, help="channel width multiplier (default 0.25)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--optimizer", choices=["adam", "adamax"], default="adam")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--limit", type=int, default=None, help="cap cells per class (smoke runs)")
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--augment-recipe", choices=RECIPES, default=DEFAULT_RECIPE,
                   help="augmentation recipe (model_conversion/augment.py; default: the shipped model's)")
    t.add_argument("--threads", type=int, default=None,
                   help="cap TensorFlow's CPU threads (speed only; not part of the recipe)")
    t.add_argument("--no-holdout", action="store_true",
                   help="final refit on every cell (no validation side): only with a recipe already validated "
                        "by a held-out run")

    c = sub.add_parser("convert", help="convert a run to float32 and int8 TFLite with metadata")
    c.add_argument("--run", required=True, type=Path)
    c.add_argument("--out", required=True, type=Path, help="folder for the .tflite files")
    c.add_argument("--name", default="allscope_blast")
    c.add_argument("--calibration", type=int, default=300, help="representative cells for int8 calibration")

    e = sub.add_parser("evaluate", help="evaluate Keras and TFLite models on the run's validation side; write the model card")
    e.add_argument("--run", required=True, type=Path)
    e.add_argument("--models", required=True, type=Path, help="folder holding the converted models")
    e.add_argument("--name", default="allscope_blast")
    e.add_argument("--frames", default=None, help="shared data folder for the whole-frame evaluation (default: the run's)")
    e.add_argument("--frame-limit", type=int, default=None, help="evaluate only the first N frames of each collection")
    e.add_argument("--holdout-card", type=Path, default=None,
                   help="for a --no-holdout refit: model_card.json of the validated held-out run of the same recipe")
    e.add_argument("--compared-card", type=Path, action="append", default=[],
                   help="model_card.json of another recipe's held-out run on the same subjects (repeatable): "
                        "recorded in the card, since choosing a recipe by held-out figures makes them optimistic")

    x = sub.add_parser("crosssource", help="leave-one-source-out table of a cheap learner on frozen embeddings")
    x.add_argument("--data", default=_default_data(), help="the shared data folder (default ../shared/data)")
    x.add_argument("--out", required=True, type=Path, help="folder for results.json / results.md (resumes)")
    x.add_argument("--preparation", action="append", default=None,
                   help="preparation(s) of model_conversion/views.py (repeatable; default cellprep)")
    x.add_argument("--learner", default="logreg", help="learner of model_conversion/crosssource.py (default logreg)")
    x.add_argument("--exclude-variant", action="append", default=[],
                   help="also run with this source never trained on (repeatable), e.g. c-nmc")
    x.add_argument("--network", default=None, help="pretrained LiteRT network file, or a frozen extractor of model_conversion/extractor.py "
                        "(mnet025-128, mnet05-160, ...; default: the 1.0/224 embedding)")
    x.add_argument("--threads", type=int, default=1, help="LiteRT/OpenCV threads (default 1)")
    x.add_argument("--augment-copies", type=int, default=0,
                   help="augmented ('lab') copies of every training cell added to the training side (default 0)")
    x.add_argument("--weighting", choices=("classes", "sources"), default="classes",
                   help="training weights (model_conversion/crosssource.py training_weights; default classes)")
    x.add_argument("--look-copies", action="store_true",
                   help="add each smear cell rendered in every other training source's look (looks.py)")
    x.add_argument("--res-copies", type=float, action="append", default=[],
                   help="add every smear cell as seen at this red-cell radius in px (repeatable, e.g. 5 and 8)")
    x.add_argument("--look-shift", action="store_true",
                   help="also score held-out ALL-IDB cells rendered in each left-out lab's look (look_shift.py)")

    sc = sub.add_parser("scales", help="measure the per-source red-cell radius of the crop-only collections")
    sc.add_argument("--data", default=_default_data())

    d = sub.add_parser("domaincheck", help="how well a small classifier tells the source from prepared cells")
    d.add_argument("--data", default=_default_data())
    d.add_argument("--preparation", action="append", default=None, help="preparation(s) (repeatable)")
    d.add_argument("--network", default=None)
    d.add_argument("--threads", type=int, default=1)

    m = sub.add_parser("maskiou", help="IoU of the preparation's cell mask against the expert masks")
    m.add_argument("--data", default=_default_data())
    m.add_argument("--preprocessing", default="cellprep-v3", choices=("cellprep-v3", "cellprep-v2"),
                   help="whose mask: the whole cell (v3, default) or the paper network's (v2)")

    cc = sub.add_parser("cnncross", help="leave-one-source-out table of the int8 device network, per candidate")
    cc.add_argument("--data", default=_default_data())
    cc.add_argument("--out", type=Path, default=Path("runs/cnn"), help="folder of candidate folders (resumes)")
    cc.add_argument("--candidate", action="append", default=[],
                    help="candidate of model_conversion/cnn_crosssource.py (repeatable)")
    cc.add_argument("--fold", action="append", default=None, help="only these folds (left-out source names)")
    cc.add_argument("--shipped-reference", type=Path, default=None,
                    help="also score this (cellprep) model as is per source, e.g. models/allscope_blast_int8.tflite")
    cc.add_argument("--reverse", action="store_true", help="folds last to first (a second process on one candidate)")
    cc.add_argument("--summary", action="store_true", help="write results.md/json over every candidate in --out")

    cf = sub.add_parser("cnnfit", help="refit a cnncross candidate on every source (then: convert --run)")
    cf.add_argument("--data", default=_default_data())
    cf.add_argument("--candidate", required=True)
    cf.add_argument("--out", required=True, type=Path)

    cd = sub.add_parser("crosscard", help="model card of a cnnfit refit: cross-source table, speed, agreement")
    cd.add_argument("--data", default=_default_data())
    cd.add_argument("--run", required=True, type=Path)
    cd.add_argument("--models", required=True, type=Path)
    cd.add_argument("--table", type=Path, default=Path("runs/cnn"), help="cnncross folder (with results.json)")
    cd.add_argument("--frame-limit", type=int, default=None)

    ff = sub.add_parser("frozenfit", help="refit a frozen-backbone candidate's head on every source, as one uint8 model")
    ff.add_argument("--data", default=_default_data())
    ff.add_argument("--network", required=True, help="extractor of model_conversion/extractor.py, e.g. mnet025-128")
    ff.add_argument("--augment-copies", type=int, default=0)
    ff.add_argument("--weighting", choices=("classes", "sources"), default="classes")
    ff.add_argument("--look-copies", action="store_true", help="add every smear cell in each source's look")
    ff.add_argument("--res-copies", type=float, action="append", default=[],
                    help="add every smear cell as seen at this red-cell radius in px (repeatable)")
    ff.add_argument("--exclude", action="append", default=[], help="source left out of the fit (repeatable)")
    ff.add_argument("--out", required=True, type=Path)

    fc = sub.add_parser("frozencard", help="model card of a frozenfit model: cross-source table, frames, figures")
    fc.add_argument("--data", default=_default_data())
    fc.add_argument("--fit", required=True, type=Path, help="frozenfit output folder")
    fc.add_argument("--table", required=True, type=Path, help="folder of crosssource runs (one per backbone)")
    fc.add_argument("--models", required=True, type=Path, help="folder holding the shipped model")
    fc.add_argument("--shipped", required=True, help="'BACKBONE :: CONFIGURATION' of the shipped row")
    fc.add_argument("--chosen-by-rule", required=True)
    fc.add_argument("--deviation", default="")
    fc.add_argument("--frames", action="store_true", help="(re)measure the whole frames with the model in --models")

    args = parser.parse_args(argv)
    if args.command == "frozencard":
        from model_conversion.frozen_card import measure_frames, write_card
        if args.frames:
            measure_frames(args.models / "allscope_blast_int8.tflite", Path(args.data), args.fit)
        write_card(args.fit, args.table, args.models, args.shipped, args.chosen_by_rule, args.deviation)
        return 0
    if args.command == "frozenfit":
        from model_conversion.frozen_fit import refit as frozen_refit
        frozen_refit(Path(args.data), args.network, args.out, args.augment_copies, tuple(args.exclude),
                     weighting=args.weighting, look_copies=args.look_copies, res_copies=tuple(args.res_copies))
        return 0
    if args.command == "crosscard":
        from model_conversion.cross_card import write_card
        write_card(args.run, args.models, args.table, Path(args.data), frame_limit=args.frame_limit)
        return 0
    if args.command in ("cnncross", "cnnfit"):
        import cv2

        cv2.setNumThreads(1)
        from model_conversion import cnn_crosssource as cnn
        if args.command == "cnnfit":
            cnn.refit(args.candidate, Path(args.data), args.out)
            return 0
        if args.shipped_reference:
            cnn.shipped_reference(args.shipped_reference, Path(args.data), args.out)
        for name in args.candidate:
            cnn.run_candidate(name, Path(args.data), args.out, args.fold, reverse=args.reverse)
        if args.summary:
            cnn.summary(args.out)
        return 0
    if args.command in ("crosssource", "scales", "maskiou", "domaincheck"):
        return _analysis_command(args)
    if args.command == "train":
        from model_conversion.train import TrainConfig, train
        config = TrainConfig(data=str(Path(args.data).resolve()), input_size=args.size, width=args.width,
                             epochs=args.epochs, batch_size=args.batch, optimizer=args.optimizer,
                             learning_rate=args.lr, augment=not args.no_augment, limit=args.limit,
                             augment_recipe=args.augment_recipe,
                             holdout=not args.no_holdout)
        train(config, args.out, threads=args.threads)
    elif args.command == "convert":
        from model_conversion.export import export_run
        export_run(args.run, args.out, args.name, args.calibration)
    elif args.command == "evaluate":
        from model_conversion.evaluate import evaluate_run
        evaluate_run(args.run, args.models, args.name, args.frames, args.frame_limit, args.holdout_card,
                     compared=args.compared_card)
    return 0


def _analysis_command(args) -> int:
    import cv2

    cv2.setNumThreads(getattr(args, "threads", 1))
    data = Path(args.data)
    if args.command == "scales":
        from model_conversion.scale_survey import measure
        measure(data)
    elif args.command == "domaincheck":
        from model_conversion.domaincheck import run as run_domain_check
        from model_conversion.embed import DEFAULT_NETWORK
        run_domain_check(data, args.preparation or ["cellprep"], args.network or DEFAULT_NETWORK, args.threads)
    elif args.command == "maskiou":
        from model_conversion.maskiou import print_mask_iou
        print_mask_iou(data, args.preprocessing)
    else:
        from model_conversion.crosssource_run import run
        from model_conversion.embed import DEFAULT_NETWORK
        run(data, args.preparation or ["cellprep"], args.learner, args.exclude_variant, args.out,
            args.network or DEFAULT_NETWORK, args.threads, augment_copies=args.augment_copies, weighting=args.weighting,
            look_copies=args.look_copies, look_shift=args.look_shift, res_copies=tuple(args.res_copies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
