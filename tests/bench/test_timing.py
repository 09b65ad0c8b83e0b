"""The measurement helpers return sane numbers on trivial work with known costs."""

from __future__ import annotations

import sys
import time

import pytest

from genreflow.bench import timing


def test_repeat_timed_warms_up_then_times_each_repeat() -> None:
    calls = []

    def work() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.02)

    result = timing.repeat_timed(work, repeats=3, warmup=2)
    assert len(calls) == 5
    assert len(result.times) == 3
    assert 0.02 <= result.best <= result.median < 0.5


def test_repeat_timed_needs_a_repeat() -> None:
    with pytest.raises(ValueError, match="repeats"):
        timing.repeat_timed(lambda: None, repeats=0)


def test_interleaved_runs_sides_round_robin_after_one_warm_up_each() -> None:
    order: list[str] = []
    sides = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    result = timing.interleaved(sides, rounds=2)
    assert order == ["a", "b", "c"] * 3  # warm-up round, then two timed rounds
    assert set(result) == {"a", "b", "c"}
    assert all(len(t.times) == 2 for t in result.values())


def test_timing_summary() -> None:
    t = timing.Timing((0.3, 0.1, 0.2))
    assert (t.best, t.median) == (0.1, 0.2)
    assert t.as_dict() == {"best_s": 0.1, "median_s": 0.2, "repeats_s": [0.3, 0.1, 0.2]}


def _child(code: str) -> timing.ChildRun:
    return timing.run_child([sys.executable, "-c", code])


def test_run_child_measures_the_peak_rss_of_that_child_alone() -> None:
    big = _child("import time, numpy as np; a = np.ones(200 * 2**20 // 8); time.sleep(0.2); print(a.sum())")
    small = _child("print('hi')")
    assert small.stdout.strip() == "hi" and small.returncode == 0
    # numpy's 200 MiB array is resident in the big child; the small child, measured after it, is not
    # credited with the big child's peak (RUSAGE_CHILDREN would be), nor with this process's RSS.
    assert 200 * 2**20 <= big.peak_rss_bytes < 200 * 2**20 + 300 * 2**20
    assert 1 * 2**20 < small.peak_rss_bytes < 100 * 2**20
    assert big.wall_s > 0 and small.wall_s > 0


def test_run_child_reports_a_failure_with_its_stderr() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        _child("import sys; sys.stderr.write('boom\\n'); sys.exit(3)")


def test_machine_info_describes_cpus_and_versions() -> None:
    info = timing.machine_info()
    assert info["cpu_count"] >= 1 and info["usable_cpus"] >= 1
    assert len(info["load_average_start"]) == 3
    assert info["versions"]["numpy"] and info["versions"]["librosa"]


def test_recorder_with_cpu_counts_this_process_busy_time() -> None:
    recorder = timing.Recorder(cpu={})

    def spin() -> None:
        end = time.process_time() + 0.1
        while time.process_time() < end:
            pass

    recorder.time("spin", spin)
    recorder.time("sleep", lambda: time.sleep(0.1))
    assert recorder.cpu is not None
    assert set(recorder.cpu["spin"][0]) == {"main", "api", "workers"}
    assert recorder.cpu["spin"][0]["main"] >= 0.08
    assert recorder.cpu["sleep"][0]["main"] < 0.05
    assert recorder.timing("sleep").best >= 0.1
