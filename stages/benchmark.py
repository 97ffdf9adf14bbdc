"""Stage benchmark@<run>: inference time of the trained model of train.<run> (1000 samples one at a time, and
batched; settings in benchmark.<run>) to benchmarks/inference/<run>.json — machine-dependent, so kept out of
metrics/."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "run name (a key of benchmark: and of train: in params.yaml)").parse_args()
    bench = stage_section(args, "benchmark", args.name)
    cfg = stage_section(args, "train", args.name)
    from genediag.evaluation.benchmark import benchmark_run, resolve_benchmark_config

    benchmark_run(args.name, cfg, resolve_benchmark_config(bench, f"{args.params}: benchmark.{args.name}"))


if __name__ == "__main__":
    run(main)
