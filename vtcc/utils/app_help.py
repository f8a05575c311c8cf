"""``vtcc-<app> --help``: every config group's options with one line each, through Hydra's app help.

The lines come from the first sentence of each option's header comment, so the help cannot drift
from the configs. The help text is stored as a ``hydra/help`` config before Hydra composes.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from hydra.core.config_store import ConfigStore

from vtcc.plugins import plugin_options

WIDTH = 100


def describe(path: Path) -> str:
    """The first sentence of a config file's header comment (``# @package`` lines skipped)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            lines.append(text)
    comment = " ".join(lines)
    sentence = re.split(r"(?<=\.)\s+(?=[A-Z])", comment, maxsplit=1)[0].rstrip(".")
    return sentence if len(sentence) <= WIDTH else sentence[: WIDTH - 3].rstrip() + "..."


def groups_of(config_dir: Path, config_name: str) -> list[str]:
    """The groups an app's primary config selects from (``paths`` and ``hydra`` are plumbing)."""
    defaults = yaml.safe_load((config_dir / f"{config_name}.yaml").read_text()).get("defaults", [])
    groups = [next(iter(entry)) for entry in defaults if isinstance(entry, dict)]
    groups = [g for g in groups if g not in ("paths", "hydra") and not g.startswith("override")]
    if config_name == "train" and (config_dir / "hydra" / "launcher").is_dir():
        groups.append("hydra/launcher")
    return groups


def help_text(config_dir: Path, config_name: str, app: str) -> str:
    purpose = describe(config_dir / f"{config_name}.yaml").removeprefix(f"{app}:").strip()
    blocks = [f"{app}: {purpose}", "", "Usage: " + app + " [group=option ...] [key=value ...]", ""]
    blocks.append("== Config groups (group=option; the option in [brackets] is the default) ==")
    defaults = yaml.safe_load((config_dir / f"{config_name}.yaml").read_text()).get("defaults", [])
    chosen = {k: v for entry in defaults if isinstance(entry, dict) for k, v in entry.items()}
    for group in groups_of(config_dir, config_name):
        blocks.append(f"{group}:")
        options = [*(config_dir / group).glob("*.yaml"), *plugin_options(group)]  # a plugin's too
        for path in sorted(options, key=lambda option: option.stem):
            name = f"[{path.stem}]" if chosen.get(group) == path.stem else path.stem
            blocks.append(f"  {name:<20} {describe(path)}")
    blocks += [
        "",
        "== Settings ==",
        f"Any key can be overridden (key=value). {app} --cfg job prints the composed config;",
        f"{app} --info defaults lists the chosen options. Your own configs: --config-dir <folder>",
        "(see the README, 'Your own configs').",
    ]
    return "\n".join(blocks).replace("${", "\\${")  # a literal in Hydra's template, not an interpolation


def register_app_help(config_dir: str | Path) -> None:
    """Store ``hydra/help/vtcc_<config>`` for each app; its primary config selects it."""
    config_dir = Path(config_dir)
    store = ConfigStore.instance()
    for config_name, app in (("train", "vtcc-train"), ("eval", "vtcc-eval"), ("predict", "vtcc-predict")):
        template = help_text(config_dir, config_name, app)
        node = {"app_name": app, "header": "", "footer": "", "template": template}
        store.store(group="hydra/help", name=f"vtcc_{config_name}", node=node, provider="vtcc")
