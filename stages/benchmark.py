"""Stage benchmark@<run>: InferenceTime of a trained chromosome run — 1000 test samples one at a time and batched,
eager PyTorch (model.pt) beside the deployed path (model.onnx in ONNX Runtime) in one process, and the accuracy
change between them (settings in chromosomes.benchmark.<run>) → benchmarks/inference/<run>.json, machine-dependent,
so not in metrics/."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("run", "run (a key of chromosomes.benchmark)"), ("model", "run folder"),
                  ("data", "ingested dataset folder"), ("split", "split CSV"), ("out", "benchmark JSON")).parse_args()
    cfg = params_of(args, "chromosomes", "benchmark", args.run)
    from genediag.evaluation.benchmark import benchmark_run

    benchmark_run(args.model, args.data, args.split, args.out, cfg)


if __name__ == "__main__":
    run(main)
