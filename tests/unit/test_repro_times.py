"""benchmarks/repro_times.py: DVC's log lines → per-stage times, the command's output and exit code unchanged."""

import importlib.util
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("repro_times", ROOT / "benchmarks" / "repro_times.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


rt = _module()


def test_classify_reads_dvc_3_log_lines():
    assert rt.classify("Running stage 'train@chromosomes24-dcnn':") == ("ran", "train@chromosomes24-dcnn")
    assert rt.classify("Stage 'generate' didn't change, skipping") == ("skipped", "generate")
    assert rt.classify("Stage 'ingest@chromosomes' is cached - skipping run, checking out outputs") == \
        ("cached", "ingest@chromosomes")
    assert rt.classify("Updating lock file 'dvc.lock'") == ("lock", None)
    assert rt.classify("> python stages/train.py chromosomes x") is None
    assert rt.classify("epoch 1/6: 100%|###| 45/45") is None


def test_stage_times_from_events():
    events = [(1.0, "skipped", "generate", 10.0, 0.5), (1.5, "ran", "a", 10.5, 0.6), (9.0, "lock", None, 20.0, 1.0),
              (9.5, "cached", "b", 20.1, 1.1), (12.0, "ran", "c", 21.0, 1.2)]
    stages = rt.stage_times(events, end_time=15.0, end_cpu=25.0)
    assert [(s.stage, s.status) for s in stages] == [("generate", "skipped"), ("a", "ran"), ("b", "cached"),
                                                     ("c", "ran")]
    # a skipped stage spans up to its line (from the start: 0 s, 0 CPU); a ran one from its line to its lock line;
    # c ends with the run
    assert [(s.start, s.end) for s in stages] == [(0.0, 1.0), (1.5, 9.0), (9.5, 12.0), (12.0, 15.0)]
    assert [s.wall for s in stages] == [1.0, 7.5, 2.5, 3.0]
    assert [s.cpu for s in stages[1:]] == [9.5, 0.9, 4.0] and stages[0].cpu is None   # no CPU figure at the start
    assert stages[1].load_1min == 0.6
    assert rt.stage_times([], end_time=3.0) == []


def test_run_and_time_passes_output_through_and_keeps_the_exit_code(tmp_path):
    script = ("import sys\n"
              "print(\"Stage 'generate' didn't change, skipping\")\n"
              "print(\"Running stage 'train@x':\")\n"
              "print('> python stages/train.py', file=sys.stderr)\n"
              "sys.stdout.write('epoch 1/2\\repoch 2/2\\n')\n"
              "print(\"Updating lock file 'dvc.lock'\")\n"
              "print(\"Stage 'evaluate@x' is cached - skipping run, checking out outputs\")\n"
              "sys.exit(3)\n")
    out = io.BytesIO()
    code, stages, totals = rt.run_and_time([sys.executable, "-c", script], out=out)
    text = out.getvalue().decode()
    assert code == 3 and totals["exit_code"] == 3
    assert "Running stage 'train@x':" in text and "> python stages/train.py" in text and "epoch 2/2" in text
    assert [(s.stage, s.status) for s in stages] == [("generate", "skipped"), ("train@x", "ran"),
                                                     ("evaluate@x", "cached")]
    assert all(s.wall is not None and s.wall >= 0 for s in stages)
    assert totals["wall_seconds"] >= sum(s.wall for s in stages) - 0.005   # each rounded to 1 ms
    rep = rt.report(stages, totals)
    assert rep["other_seconds"] >= -0.005
    assert rep["by_status"]["ran"]["stages"] == 1 and len(rep["stages"]) == 3
    assert "train@x" in rt.table(rep) and "total" in rt.table(rep)


def test_main_writes_the_json(tmp_path, capsys):
    out = tmp_path / "repro.json"
    code = rt.main(["--out", str(out), "--", sys.executable, "-c", "print(\"Running stage 'a':\")"])
    assert code == 0
    rep = json.loads(out.read_text())
    assert [s["stage"] for s in rep["stages"]] == ["a"] and rep["command"][-1].startswith("print")
    assert "written" in capsys.readouterr().out
