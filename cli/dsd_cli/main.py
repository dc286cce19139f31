"""Root of the `dsd` CLI; sub-apps live in one module per area."""

from __future__ import annotations

import typer

from dsd_cli import dev, operating, runtime, simulating, tls

app = typer.Typer(
    name="dsd",
    help="DSD: distributed speculative decoding across edge and cloud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(operating.app, name="operator")
app.add_typer(simulating.app, name="sim")
app.add_typer(tls.app, name="tls")
runtime.register(app)


if __name__ == "__main__":
    app()
