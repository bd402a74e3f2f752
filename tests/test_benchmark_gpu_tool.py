"""tools/benchmark_gpu.py: its tables, checked on the CPU at small sizes (the GPU run itself
waits for a machine with one; speed is never asserted in tests)."""
import json

import pytest
import torch
import yaml

from scripts import load_script

FAST_TRAIN_OPTS = [
    "MODEL.YOLOV7.WIDTH_MULTIPLE", "0.25", "INPUT.YOLOV7.IMAGE_SIZE", "160",
    "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "160", "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1", "SOLVER.YOLOV7.NOMINAL_BATCH_SIZE", "2",
    "TEST.EVAL_PERIOD", "3", "DATALOADER.NUM_WORKERS", "0", "TEST.YOLOV7.FLIPS", "()",
    "TEST.YOLOV7.SCALES", "()",
]


def table(out: str, first_cell: str):
    return [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines()
            if line.startswith("| " + first_cell)]


def test_fps_and_loss_tables_on_the_cpu(capsys):
    pytest.importorskip("sas_yolov7")
    tool = load_script("tools/benchmark_gpu.py")
    assert tool.main(["--device", "cpu", "--parts", "fps", "loss", "--models", "yolov7-tiny",
                      "--batches", "1", "2", "--size", "64", "--calls", "1",
                      "--loss-batch", "2", "--loss-boxes", "3"]) == 0
    out = capsys.readouterr().out
    assert "cpu (a check of the tool" in out
    fps = table(out, "yolov7-tiny")
    assert [r[0] for r in fps] == ["yolov7-tiny b1 64", "yolov7-tiny b2 64"]
    for row in fps:  # official, ours autocast, ours .half(): all measured
        assert all(cell.endswith("FPS") for cell in row[1:4])
    assert fps[0][4] == "286 FPS" and fps[1][4] == ""  # the paper's batch-1 figure only
    loss = table(out, "o")
    assert [r[0] for r in loss] == ["official (ComputeLossOTA)", "ours (YOLOv7Loss)"]
    assert all(r[1] == "" and r[2].endswith("ms") for r in loss)  # no sync count off CUDA


@pytest.mark.usefixtures("deepforest_prepared")
def test_amp_training_run_table_on_the_cpu(capsys, tmp_path):
    tool = load_script("tools/benchmark_gpu.py")
    config = tmp_path / "amp-off.yaml"  # the run turns AMP on whatever the config says
    config.write_text(f"_BASE_: {tool.TRAIN_CONFIG}\nSOLVER:\n  AMP:\n    ENABLED: False\n")
    output = tmp_path / "run"
    assert tool.main(["--device", "cpu", "--parts", "train", "--official", "none",
                      "--train-config", str(config), "--train-minutes", "0",
                      "--output-dir", str(output), "--train-opts", *FAST_TRAIN_OPTS]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 3 |")]
    iterations, seconds, loss, memory, ap, ap50 = [c.strip() for c in row.split("|")[1:-1]]
    assert float(seconds) > 0 and float(loss) > 0 and float(ap50) >= float(ap) >= 0
    assert memory == ""  # logged on CUDA only
    used = yaml.safe_load((output / "config.yaml").read_text())
    assert used["SOLVER"]["AMP"]["ENABLED"] is True and used["MODEL"]["DEVICE"] == "cpu"


def test_training_run_failure_shows_the_end_of_its_log(tmp_path):
    tool = load_script("tools/benchmark_gpu.py")
    with pytest.raises(RuntimeError, match="TEST.YOLOV7.FLIPS takes a tuple"):
        tool.train_run(torch.device("cpu"), tool.TRAIN_CONFIG, 0.0,
                       ["TEST.YOLOV7.FLIPS", "False"], tmp_path)


def test_summary_of_a_run(tmp_path):
    tool = load_script("tools/benchmark_gpu.py")
    metrics = tmp_path / "metrics.json"
    records = [{"iteration": 0, "total_loss": 3.0, "time": 0.5},
               {"iteration": 1, "total_loss": 2.0, "time": 0.3},
               {"iteration": 1, "bbox/AP": 10.0, "bbox/AP50": 20.0},
               {"iteration": 2, "total_loss": 1.5, "time": 0.4},
               {"iteration": 2, "bbox/AP": 12.0, "bbox/AP50": 25.0}]
    metrics.write_text("\n".join(json.dumps(r) for r in records))
    log = "iter: 1  max_mem: 812M\niter: 2  max_mem: 1024M\n"
    assert tool.summarize_run(metrics, log) == {
        "iterations": 3, "seconds_per_iteration": 0.4, "total_loss": 1.5,
        "peak_memory_mb": 1024, "AP": 12.0, "AP50": 25.0}
    metrics.write_text(json.dumps({"iteration": 0, "bbox/AP": 1.0}))
    with pytest.raises(RuntimeError, match="no training iterations"):
        tool.summarize_run(metrics, "")


def test_cuda_without_a_gpu_says_what_to_do(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    tool = load_script("tools/benchmark_gpu.py")
    with pytest.raises(SystemExit):
        tool.main(["--parts", "fps"])
    assert "--device cpu to check the tool" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sync_count_on_cuda():
    tool = load_script("tools/benchmark_gpu.py")
    device = torch.device("cuda")
    x = torch.arange(10, device=device)
    assert tool.count_syncs(lambda: x + 1, device) == 0
    assert tool.count_syncs(lambda: (x.nonzero(), x.sum().item()), device) == 2


def test_official_code_that_cannot_be_imported_leaves_our_columns(capsys, tmp_path):
    tool = load_script("tools/benchmark_gpu.py")
    assert tool.main(["--device", "cpu", "--parts", "fps", "--official", str(tmp_path),
                      "--models", "yolov7-tiny", "--batches", "1", "--size", "64",
                      "--calls", "1"]) == 0
    out = capsys.readouterr().out
    assert f"official: {tmp_path} is not a checkout of the official yolov7 repository" in out
    (row,) = table(out, "yolov7-tiny")
    assert row[1] == "" and row[2].endswith("FPS") and row[3].endswith("FPS")
