"""The ``hprune`` command.

Subcommands are listed here by name and imported only when used, so that
``hprune --help`` is instant and a study server runs without torch installed.
Each subcommand lives in its own module under ``hprune/commands/`` (or, for
the web study, beside the app it drives) and calls into the packages.
"""

from __future__ import annotations

import importlib

import click

from hprune import __version__

# name -> "module:attribute" of a click command. Add a line only when the command works.
COMMANDS: dict[str, str] = {
    "render": "hprune.commands.render:render",
    "score": "hprune.commands.score:score",
    "import-metrics": "hprune.commands.import_metrics:import_metrics",
    "toy-model": "hprune.commands.toy_model:toy_model",
    "contrib": "hprune.commands.contrib:contrib",
    "prune": "hprune.commands.prune:prune",
    "distill": "hprune.commands.distill:distill",
    "mini": "hprune.commands.mini:mini",
    "study": "hprune.commands.study:study",
    "quantize": "hprune.commands.quantize:quantize",
    "profile": "hprune.commands.profile:profile",
    "analyze": "hprune.commands.analyze:analyze",
    "power": "hprune.commands.power:power",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand is needed."""

    def __init__(self, *args, lazy_commands: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands:
            module_name, attr = self.lazy_commands[name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                raise click.ClickException(
                    f"'hprune {name}' needs a package that is not installed ({exc.name}); "
                    "install the matching extra, e.g. pip install 'hprune[all]'"
                ) from exc
            return getattr(module, attr)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="hprune")
def main() -> None:
    """Compress diffusion transformers with HierarchicalPrune, render matched
    image sets, and measure with people what the compression costs."""


if __name__ == "__main__":
    main()
