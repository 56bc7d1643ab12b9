"""The conformance checks of an accelerate-core backend or precision plugin.

Run them against an installed plugin with

    pytest --accelerate-backend NAME --pyargs accelerate_conformance
    pytest --accelerate-precision NAME --pyargs accelerate_conformance

Each test is one check; its docstring's first line is the check's title in the report. Training
checks share one run per module (one process group, one engine): ``training_run`` trains the
recipe of ``recipe.py`` for two epochs with a checkpoint in between, on two processes when the
backend is distributed, and the hand-written reference in the same processes.
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
from typing import Any

import pytest

from . import recipe
from .fixtures import TORCHRUN_VARIABLES, _fresh_process_state, plugins, registered, target
from .target import Target

pytestmark = pytest.mark.accelerate_conformance

CORE_PRECISIONS = ("no", "bf16", "fp16")
# max |ours - reference| / max |reference| allowed where the arithmetic differs legitimately.
MULTI_PROCESS_TOLERANCE = {"no": 1e-5, "bf16": 2e-2, "fp16": 2e-2}
PLUGIN_PRECISION_TOLERANCE = 0.1  # fp8 and other plugin precisions, against fp32 training
__all__ = ["_fresh_process_state", "plugins", "target"]  # shared fixtures (fixtures.py)


def tolerance_for(target: Target, multi_process: bool) -> float:
    """0 (bit-identical) where the maths is the reference's; small bounds where it is not."""
    if target.tolerance is not None:
        return target.tolerance
    if target.precision_name not in CORE_PRECISIONS:
        return PLUGIN_PRECISION_TOLERANCE
    return MULTI_PROCESS_TOLERANCE[target.precision_name] if multi_process else 0.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def backend_spec(target: Target, plugins: dict[str, Any]) -> Any:
    return registered(plugins, "backend", target.backend_name).spec


@pytest.fixture(scope="module")
def processes(target: Target, plugins: dict[str, Any], backend_spec: Any) -> int:
    """Two processes for a distributed backend (or its minimum), else one."""
    if target.precision is not None:
        registered(plugins, "precision", target.precision_name)
    return max(recipe.PROCESSES, backend_spec.min_processes) if backend_spec.distributed else 1


@pytest.fixture(scope="module")
def training_run(
    target: Target, processes: int, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """Every process's facts from one training scenario (see ``recipe.training_scenario``)."""
    directory = tmp_path_factory.mktemp("conformance") / "checkpoint"
    with pytest.MonkeyPatch.context() as patch:
        for name in (*TORCHRUN_VARIABLES, *recipe.SETTING_VARIABLES):
            patch.delenv(name, raising=False)
        try:
            return recipe.run_scenario(
                recipe.training_scenario, target, str(directory),
                processes=processes, timeout=target.timeout,
            )  # fmt: skip
        except AssertionError as exc:  # run_distributed: a hang or a process that died
            return [{"error": f"the training run did not complete: {exc}"}] * processes
        finally:
            from accelerate_core.state import reset_state

            reset_state()


def _facts(run: list[dict[str, Any]], key: str) -> list[Any]:
    """``run[rank][key]`` for every rank, failing with that rank's error when it has none."""
    out = []
    for rank, result in enumerate(run):
        if "error" in result:
            pytest.fail(_rank_error(rank, result, "could not train at all"), pytrace=False)
        value = result.get(key)
        if value is None:
            pytest.fail(f"rank {rank}: no result for '{key}'", pytrace=False)
        if isinstance(value, dict) and "error" in value:
            pytest.fail(_rank_error(rank, value, f"the '{key}' step failed"), pytrace=False)
        out.append(value)
    return out


def _rank_error(rank: int, result: dict[str, Any], what: str) -> str:
    trace = result.get("traceback") or ""
    tail = "\n".join(trace.strip().splitlines()[-12:])
    return f"rank {rank}: {what}: {result['error']}" + (f"\n{tail}" if tail else "")


def _within(comparison: dict[str, Any], tolerance: float) -> bool:
    if tolerance == 0.0:
        return comparison["identical"]
    return comparison["relative"] <= tolerance


def _describe(comparison: dict[str, Any]) -> str:
    if comparison["identical"]:
        return "identical"
    return (
        f"relative difference {comparison['relative']:.3g} (||ours - reference|| / "
        f"||reference||), largest {comparison['max_difference']:.3g} in '{comparison['where']}'"
    )


def _allowed(tolerance: float) -> str:
    return "bit-identical" if tolerance == 0.0 else f"relative difference <= {tolerance:g}"


def _detail(request: pytest.FixtureRequest, text: str) -> None:
    """A line the report prints under a check that passed (how close it was)."""
    request.node.user_properties.append(("accelerate_conformance", text))


# --------------------------------------------------------------------------- checks


def test_registration(target: Target, plugins: dict[str, Any]) -> None:
    """installed, loads cleanly, declares its accelerate-core range, implements known hooks"""
    from accelerate_core import hookspecs
    from accelerate_core.plugins import BUILTIN_LABEL, incompatibility

    assert not plugins["conflicts"], f"name conflicts: {'; '.join(plugins['conflicts'])}"
    wanted = [("backend", target.backend)] if target.backend else []
    wanted += [("precision", target.precision)] if target.precision else []
    wanted += [("device", target.device)] if target.device else []
    specs = {n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "accelerate_core_spec")}
    manager = plugins["manager"]
    for kind, name in wanted:
        found = plugins["registry"][kind].get(name)
        if found is None:
            installed = ", ".join(sorted(plugins["registry"][kind])) or "none"
            failed = [
                f"{r.name} ({r.distribution}: {r.status}, {r.error})"
                for r in manager.entry_points
                if r.error
            ]
            pytest.fail(
                f"{kind} '{name}' is not registered by any installed plugin (installed {kind}s: "
                f"{installed}). Does the distribution declare an entry point in the "
                "'accelerate_core' group whose module returns it from accelerate_core_"
                f"{kind}s()?"
                + (f" Plugins that did not load: {'; '.join(failed)}" if failed else ""),
                pytrace=False,
            )
        if found.distribution == BUILTIN_LABEL:
            continue
        records = [r for r in manager.entry_points if found.distribution.startswith(r.distribution)]
        for record in records:
            messages = [m for m in plugins["warnings"] if f"'{record.name}'" in m]
            assert not messages, f"entry point '{record.name}' warned when loaded: {messages}"
        distribution = records[0].distribution if records else found.distribution
        try:
            requires = importlib_metadata.requires(distribution) or []
        except importlib_metadata.PackageNotFoundError:
            requires = []
        core = [r for r in requires if r.replace("_", "-").lower().startswith("accelerate-core")]
        assert any(any(op in r for op in "<>=~") for r in core), (
            f"{distribution} declares no accelerate-core version range (found {core or 'none'}); "
            "declare the range whose hooks it implements, say dependencies = "
            '["accelerate-core>=0.1,<0.2"], so an incompatible core skips it with a message'
        )
        assert incompatibility(distribution) is None, incompatibility(distribution)
        unknown = sorted(
            attr
            for attr in dir(found.plugin)
            if attr.startswith("accelerate_core_")
            and hasattr(getattr(found.plugin, attr), "accelerate_core_impl")
            and attr not in specs
        )
        assert not unknown, (
            f"{distribution} implements hooks this core does not define (typos?): {unknown}; "
            "plugins/README.md lists every hook"
        )


def test_single_process_training_matches_reference(
    target: Target,
    processes: int,
    training_run: list[dict[str, Any]],
    request: pytest.FixtureRequest,
) -> None:
    """one process trains exactly like the hand-written loop (within tolerance for fp8)"""
    if processes > 1:
        pytest.skip(
            f"backend '{target.backend_name}' is distributed: checked on {processes} processes"
        )
    (training,) = _facts(training_run, "training")
    (reference,) = _facts(training_run, "reference")
    expected_batches = recipe.EPOCHS * recipe.SAMPLES // recipe.BATCH
    assert training["batches"] == expected_batches, (
        f"the prepared dataloader gave {training['batches']} batches over {recipe.EPOCHS} epochs, "
        f"expected {expected_batches}"
    )
    tolerance = tolerance_for(target, multi_process=False)
    comparison = recipe.compare(training["weights"], reference)
    assert _within(comparison, tolerance), (
        f"weights after training differ from the hand-written loop: {_describe(comparison)} "
        f"(allowed: {_allowed(tolerance)})"
    )
    _check_loss(training_run[0]["facts"], training["final_loss"], tolerance)
    _detail(request, f"{_describe(comparison)} (allowed: {_allowed(tolerance)})")


def _check_loss(facts: dict[str, Any], final: float, tolerance: float) -> None:
    """The model trained, and (within the tolerance) as far as the reference did."""
    initial, reference = facts["initial_loss"], facts["reference_loss"]
    assert final < 0.7 * initial, f"the model did not train: loss {initial:.4g} -> {final:.4g}"
    assert abs(final - reference) <= max(tolerance, 1e-6) * reference, (
        f"final loss {final:.5g}, the reference's {reference:.5g}: more than "
        f"{max(tolerance, 1e-6):g} apart"
    )


def test_multi_process_training_matches_hand_written_ddp(
    target: Target,
    processes: int,
    training_run: list[dict[str, Any]],
    request: pytest.FixtureRequest,
) -> None:
    """several processes train like hand-written DistributedDataParallel"""
    if processes == 1:
        pytest.skip(f"backend '{target.backend_name}' is not distributed: checked on one process")
    trainings = _facts(training_run, "training")
    expected_batches = recipe.EPOCHS * recipe.SAMPLES // recipe.BATCH // processes
    batches = [t["batches"] for t in trainings]
    assert batches == [expected_batches] * processes, (
        f"batches per rank over {recipe.EPOCHS} epochs: {batches}, expected {expected_batches} "
        "each (the core shards prepared dataloaders; a backend must not re-shard them)"
    )
    references = _facts(training_run, "reference")
    tolerance = tolerance_for(target, multi_process=True)
    comparison = recipe.compare(trainings[0]["weights"], references[0])
    assert _within(comparison, tolerance), (
        f"rank 0's weights differ from hand-written DDP: {_describe(comparison)} (allowed: "
        f"{_allowed(tolerance)}); are gradients averaged over every rank, once per optimizer "
        "step?"
    )
    _check_loss(training_run[0]["facts"], trainings[0]["final_loss"], tolerance)
    _detail(request, f"{_describe(comparison)} (allowed: {_allowed(tolerance)})")


def test_multi_process_ranks_hold_the_same_weights(
    target: Target, processes: int, training_run: list[dict[str, Any]]
) -> None:
    """every rank ends with the same model (gradients are synchronised)"""
    if processes == 1:
        pytest.skip(f"backend '{target.backend_name}' is not distributed: checked on one process")
    trainings = _facts(training_run, "training")
    first = trainings[0]["probe"]
    for rank, training in enumerate(trainings[1:], start=1):
        difference = float((training["probe"] - first).abs().max())
        assert difference == 0.0, (
            f"after training, rank {rank}'s model computes different outputs from rank 0's (max "
            f"|difference| {difference:.3g}): gradients are not synchronised between processes. "
            "accelerate_core_wrap must return models whose backward all-reduces gradients "
            "(and accelerate_core_no_sync may disable that only on accumulation micro-steps)"
        )
        if training["weights"] and trainings[0]["weights"]:
            comparison = recipe.compare(training["weights"], trainings[0]["weights"])
            assert comparison["identical"], f"rank {rank}'s weights: {_describe(comparison)}"


def test_accumulation_micro_steps_do_not_communicate(
    target: Target, processes: int, backend_spec: Any, training_run: list[dict[str, Any]]
) -> None:
    """micro-steps that do not sync send no gradient reductions; the syncing step does"""
    if processes == 1:
        pytest.skip(f"backend '{target.backend_name}' is not distributed: checked on one process")
    for rank, steps in enumerate(_facts(training_run, "communication")):
        quiet = [count for sync, count in steps if not sync]
        syncing = [count for sync, count in steps if sync]
        assert quiet and syncing, f"rank {rank}: one accumulation cycle gave {steps}"
        assert backend_spec.reduces_every_micro_step or all(count == 0 for count in quiet), (
            f"rank {rank}: the backward of an accumulation micro-step that does not sync ran "
            f"{max(quiet)} reducing collective(s) (all-reduce/reduce-scatter): "
            "accelerate_core_no_sync must return a context in which backward does not "
            "synchronise gradients (DDP: model.no_sync(); FSDP2: set_requires_gradient_sync)"
        )
        assert all(count > 0 for count in syncing), (
            f"rank {rank}: the syncing micro-step ran no reducing collective: gradients are "
            "never synchronised"
        )


def test_save_load_round_trip_restores_weights_exactly(
    training_run: list[dict[str, Any]],
) -> None:
    """save_state then load_state restores the saved weights bit for bit"""
    for rank, result in enumerate(_facts(training_run, "checkpoint")):
        comparison = recipe.compare(result["restored"], result["saved"])
        assert comparison["identical"], (
            f"rank {rank}: load_state did not restore the weights save_state saved: "
            f"{_describe(comparison)}; see accelerate_core_save_state/accelerate_core_load_state"
        )


def test_resume_continues_identically(training_run: list[dict[str, Any]]) -> None:
    """training on after load_state gives the weights of the run that never stopped"""
    for rank, result in enumerate(_facts(training_run, "checkpoint")):
        comparison = recipe.compare(result["resumed"], result["expected"])
        assert comparison["identical"], (
            f"rank {rank}: after load_state the next epoch ends with other weights than the "
            f"uninterrupted run: {_describe(comparison)}; is the optimizer state (or the engine's "
            "own state) saved and loaded?"
        )


def test_unknown_option_is_a_clear_error_on_every_rank(
    target: Target, plugins: dict[str, Any], processes: int
) -> None:
    """an option the plugin does not know is an accelerate-core error on every rank, not a hang"""
    from accelerate_core.plugins import BUILTIN_LABEL

    kind = "backend" if target.backend else "precision"
    name = target.backend_name if target.backend else target.precision_name
    if plugins["registry"][kind][name].distribution == BUILTIN_LABEL:
        pytest.skip(f"the built-in {kind} '{name}' takes no options of its own")
    where = "backend_options" if kind == "backend" else f"precision_options['{name}']"
    given = f"{where}={{'{recipe.BAD_OPTION}': True}}"
    try:
        results = recipe.run_scenario(
            recipe.bad_option_scenario, target, kind,
            processes=processes if kind == "backend" else 1, timeout=target.timeout,
        )  # fmt: skip
    except AssertionError as exc:  # run_distributed: the run did not finish
        pytest.fail(
            f"with {given} the run did not finish (a rank raised while another waits in a "
            f"collective?): {str(exc).splitlines()[0]}",
            pytrace=False,
        )
    for rank, result in enumerate(results):
        if "error" in result:
            pytest.fail(_rank_error(rank, result, "the check itself failed"), pytrace=False)
        assert result["raised"], (
            f"rank {rank}: {given} was accepted without an error; a plugin must reject "
            "options it does not know (ConfigurationError naming the option and the valid ones)"
        )
        assert result["core_error"], (
            f"rank {rank}: {given} raised {result['type']}, not an accelerate-core error "
            f"(raise accelerate_core.ConfigurationError): {result['message']}"
        )
        assert recipe.BAD_OPTION in result["message"], (
            f"rank {rank}: the error does not name the unknown option: {result['message']}"
        )


def test_name_typo_names_the_installed_ones(target: Target, plugins: dict[str, Any]) -> None:
    """a misspelt name is an error that lists the installed names"""
    from accelerate_core import (
        AccelerateCoreError,
        Accelerator,
        PartialState,
        PluginNotInstalledError,
    )

    if target.backend:
        typo = target.backend + "x"
        with pytest.raises(PluginNotInstalledError) as info:
            Accelerator(backend=typo, cpu=True)
        assert target.backend in str(info.value).split("installed backends:")[-1], (
            f"the error for backend '{typo}' does not list '{target.backend}': {info.value}"
        )
    if target.precision:
        typo = target.precision + "x"
        with pytest.raises(AccelerateCoreError) as info:
            Accelerator(mixed_precision=typo, cpu=True)
        assert target.precision in str(info.value).split(typo)[-1], (
            f"the error for mixed_precision '{typo}' does not list '{target.precision}': "
            f"{info.value}"
        )
    if target.device:
        typo = target.device + "x"
        with pytest.raises(PluginNotInstalledError) as info:
            PartialState(device=typo)
        assert target.device in str(info.value).split("installed devices:")[-1], (
            f"the error for device '{typo}' does not list '{target.device}': {info.value}"
        )
