"""`dsd sim run|sweep`: simulate edge/cloud deployments from scenario files."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="DSD-Sim: discrete-event simulation of edge/cloud speculative decoding.",
                  no_args_is_help=True)

SET = typer.Option([], "--set", help="Override a field: key.path=value (repeatable), e.g. network.rtt_ms.mean=50.")


def _overrides(items: list[str]) -> dict[str, object]:
    from dsd_sim.scenario import ScenarioError, parse_override

    try:
        return dict(parse_override(i) for i in items)
    except ScenarioError as e:
        raise typer.BadParameter(str(e)) from None


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(2)


@app.command("run")
def run(
    scenario_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Scenario YAML."),
    out: Path | None = typer.Option(None, help="Metrics JSON path [default: sim-out/<scenario name>.json]."),
    set_: list[str] = SET,
) -> None:
    """Simulate one scenario: print a table of TTFT/TPOT/throughput/goodput and write metrics JSON."""
    from dsd_sim import reporting, scenario, simulation

    try:
        sc = scenario.load(scenario_file, _overrides(set_))
    except scenario.ScenarioError as e:
        _fail(str(e))
        return
    summary = simulation.run(sc).summary()
    reporting.print_summary(summary)
    path = out or Path("sim-out") / f"{sc.name}.json"
    reporting.write_json(summary, path)
    typer.echo(f"metrics written to {path}")


@app.command("sweep")
def sweep(
    scenario_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Base scenario YAML."),
    param: list[str] = typer.Option(..., "--param", "-p", help="Axis key.path=v1,v2,... (repeatable; the "
                                    "first is the plot's x axis, the second its series)."),
    out: Path = typer.Option(Path("sweep"), help="Directory for results.csv and results.png."),
    jobs: int = typer.Option(0, help="Parallel processes (0 = one per core)."),
    metric: list[str] = typer.Option(["throughput_tokens_per_s", "tpot_ms_p50", "goodput_tokens_per_s"],
                                     help="Metrics to plot."),
    set_: list[str] = SET,
) -> None:
    """Run a parameter grid in parallel; write CSV and plots."""
    from rich.progress import Progress

    from dsd_sim import reporting, scenario, sweeping

    try:
        axes = [sweeping.parse_axis(p) for p in param]
        with Progress() as bar:
            task = bar.add_task("simulating", total=None)
            rows = sweeping.sweep(scenario_file, axes, _overrides(set_), jobs or None,
                                  lambda done, total: bar.update(task, completed=done, total=total))
    except scenario.ScenarioError as e:
        _fail(str(e))
        return
    reporting.write_csv(rows, out / "results.csv")
    reporting.plot_sweep(rows, axes[0].key, axes[1].key if len(axes) > 1 else None, metric, out / "results.png",
                         title=scenario_file.stem)
    typer.echo(f"{len(rows)} runs: {out / 'results.csv'}, {out / 'results.png'}")
