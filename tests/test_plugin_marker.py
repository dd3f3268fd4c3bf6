"""The energy marker: validation at collection, grid expansion and ids, the engine's limit."""

import re

import pytest

from .plugin_fake import project


def literal(text):
    """fnmatch treats [...] as a character class: escape the brackets of a message."""
    return re.sub(r"([\[\]])", r"[\1]", text)


@pytest.fixture
def proj(pytester, monkeypatch):
    return project(pytester, monkeypatch)


@pytest.mark.parametrize(
    "marker, message",
    [
        ("energy(n_in=0, n_out=64)", "test_bad: @pytest.mark.energy n_in=0: must be a positive integer"),
        ("energy(n_in=128, n_out=-5)", "test_bad: @pytest.mark.energy n_out=-5: must be a positive integer"),
        ("energy(n_in=12.5, n_out=64)", "test_bad: @pytest.mark.energy n_in=12.5: must be a positive integer"),
        ("energy(n_in=True, n_out=64)", "test_bad: @pytest.mark.energy n_in=True: must be a positive integer"),
        ("energy(n_in='512', n_out=64)", "test_bad: @pytest.mark.energy n_in='512': must be a positive integer"),
        ("energy(n_in=[], n_out=64)", "test_bad: @pytest.mark.energy n_in=[]: give at least one length"),
        ("energy(n_in=[64, 0], n_out=64)", "test_bad: @pytest.mark.energy n_in: 0 in [64, 0] must be a positive integer"),
        ("energy(n_in=[64, 64], n_out=64)", "test_bad: @pytest.mark.energy n_in lists [64] more than once"),
        ("energy(n_in=64)", "test_bad: @pytest.mark.energy needs n_out=<tokens>"),
        ("energy(128, 64)", "test_bad: @pytest.mark.energy takes keyword arguments only (got positional [128, 64])*"),
        ("energy(n_in=64, n_out=64, n_outs=3)", "test_bad: @pytest.mark.energy got unknown argument(s) n_outs (did you mean n_out?); known: n_in, n_out, *"),
        ("energy(n_in=64, n_out=64, flavour=3)", "test_bad: @pytest.mark.energy got unknown argument(s) flavour; known: n_in, n_out, *"),
        ("energy(n_in=64, n_out=64, requests=0)", "test_bad: @pytest.mark.energy requests=0: must be a positive integer"),
        ("energy(n_in=64, n_out=64, max_batch_size=-1)", "test_bad: @pytest.mark.energy max_batch_size=-1*"),
        ("energy(n_in=64, n_out=64, rounds=0)", "test_bad: @pytest.mark.energy rounds=0*"),
        ("energy(n_in=64, n_out=64, tolerance=-0.1)", "test_bad: @pytest.mark.energy tolerance=-0.1: give a fraction*"),
        ("energy(n_in=64, n_out=64, tolerance=5)", "test_bad: @pytest.mark.energy tolerance=5: write 5% for 5 percent, or a fraction such as 0.05"),
        ("energy(n_in=64, n_out=64, model_tolerance='lots')", "test_bad: @pytest.mark.energy model_tolerance='lots'*"),
    ],
)
def test_invalid_marker_arguments_are_collection_errors_naming_test_and_argument(proj, marker, message):
    proj.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_bad(joules):
            joules()

        def test_fine():
            pass
        """
    )
    result = proj.runpytest()  # found by every run, not only by the GPU runner's --joules
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting*", f"*{literal(message)}*"])
    assert "INTERNALERROR" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_marker_errors_are_collection_errors_with_joules_too(proj):
    proj.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=64, n_out=[16, 0])
        def test_bad(joules):
            joules()
        """
    )
    result = proj.runpytest("--joules")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*test_bad: @pytest.mark.energy n_out: 0 in [[]16, 0[]] must be a positive integer*"])
    assert "INTERNALERROR" not in result.stdout.str()


def test_a_marked_test_without_the_joules_fixture_is_a_collection_error(proj):
    proj.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=64, n_out=64)
        def test_forgot_fixture():
            pass
        """
    )
    result = proj.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*test_forgot_fixture: @pytest.mark.energy needs the `joules` fixture*"])


def test_lists_expand_into_a_grid_with_readable_ids(proj):
    proj.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=[128, 512], n_out=[64, 256])
        def test_grid(joules):
            m = joules()
            assert (m.workload.n_in, m.workload.n_out) in [(128, 64), (128, 256), (512, 64), (512, 256)]

        @pytest.mark.energy(n_in=[128, 512], n_out=32)
        def test_axis(joules):
            assert joules().workload.n_out == 32
        """
    )
    result = proj.runpytest("--joules", "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [
            "*test_grid[[]n_in=128-n_out=64[]] PASSED*",
            "*test_grid[[]n_in=128-n_out=256[]] PASSED*",
            "*test_grid[[]n_in=512-n_out=64[]] PASSED*",
            "*test_grid[[]n_in=512-n_out=256[]] PASSED*",
            "*test_axis[[]n_in=128-n_out=32[]] PASSED*",
            "*test_axis[[]n_in=512-n_out=32[]] PASSED*",
        ]
    )


def test_grid_combines_with_the_tests_own_parametrize(proj):
    proj.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("dtype", ["bf16", "fp8"])
        @pytest.mark.energy(n_in=[64, 128], n_out=16)
        def test_both(joules, dtype):
            joules()
        """
    )
    result = proj.runpytest("--joules", "--collect-only", "-q")
    ids = sorted(line.split("::")[1] for line in result.stdout.lines if "::test_both" in line)
    assert ids == sorted(
        f"test_both[{p}-{d}]" for d in ("bf16", "fp8") for p in ("n_in=64-n_out=16", "n_in=128-n_out=16")
    )
    proj.runpytest("--joules").assert_outcomes(passed=4)


def test_a_single_point_keeps_the_plain_test_id(proj):
    proj.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=64, n_out=16)
        def test_one(joules):
            joules()
        """
    )
    result = proj.runpytest("--joules", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_a_single_point_keeps_the_plain_test_id.py::test_one"])


def test_a_class_marker_applies_to_its_methods(proj):
    proj.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=64, n_out=[16, 32])
        class TestChat:
            def test_reply(self, joules):
                assert joules().workload.n_in == 64
        """
    )
    proj.runpytest("--joules").assert_outcomes(passed=2)


def test_workload_beyond_the_engines_positions_is_a_setup_error_naming_test_and_point(proj):
    proj.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=[1024, 4000], n_out=512)
        def test_long(joules):
            joules()
        """
    )
    result = proj.runpytest("--joules")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at setup of test_long[[]n_in=4000-n_out=512[]]*",
         "*test_long[[]n_in=4000-n_out=512[]]: n_in=4000-n_out=512: n_in + n_out = 4000 + 512 = 4512 exceeds fake's maximum of 4096 positions*"]
    )


def test_overrides_in_the_call_are_checked_too(proj):
    proj.makepyfile(
        """
        import pytest

        @pytest.mark.energy(n_in=64, n_out=16)
        def test_override(joules):
            assert joules(n_out=32).workload.n_out == 32
            joules(n_in=0)

        @pytest.mark.energy(n_in=64, n_out=16)
        def test_typo(joules):
            joules(n_outt=3)

        @pytest.mark.energy(n_in=64, n_out=16)
        def test_bad_rounds(joules):
            joules(rounds=0)

        @pytest.mark.energy(n_in=64, n_out=16)
        def test_bad_tolerance(joules):
            joules(tolerance="lots")

        @pytest.mark.energy(n_in=64, n_out=16)
        def test_good_overrides(joules):
            m = joules(rounds=2, warmup=0, tolerance="2%", requests=3)
            assert len(m.rounds) == 2 and m.workload.requests == 3 and m.verdict.tolerance == 0.02

        def test_unmarked(joules):
            joules()
        """
    )
    result = proj.runpytest("--joules")
    result.assert_outcomes(failed=5, passed=1)
    result.stdout.fnmatch_lines(["*test_override: n_in must be a positive integer, got 0*"])
    result.stdout.fnmatch_lines(["*test_bad_rounds: joules() rounds=0: must be a positive integer*"])
    result.stdout.fnmatch_lines(["*test_bad_tolerance: joules() tolerance='lots': give a fraction*"])
    result.stdout.fnmatch_lines(["*joules() got unexpected argument(s) n_outt*"])
    result.stdout.fnmatch_lines(["*test_unmarked: no workload: mark the test @pytest.mark.energy*"])
