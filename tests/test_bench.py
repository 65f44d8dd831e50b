import json

from interp.bench import main


def test_bench_prints_ratios_as_last_json_line(tiny_run, capsys):
    assert main(["--p", "13", "--rounds", "2", "--round-seconds", "0", "--run", str(tiny_run)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n_train"] == int(0.3 * 13 * 13) and result["allocator"] == "default"
    assert abs(result["speedup"] - result["hooked_ms_per_step"] / result["fast_ms_per_step"]) < 0.02
    assert result["analysis_checkpoints"] == 5 and result["analysis_checkpoints_per_s"] > 0
