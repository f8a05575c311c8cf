"""Every user-facing value is type-checked before any work (vtcc/config/validate.py): each
composed config passes, and a wrong-typed value at any of its keys is one ConfigError naming it."""

from __future__ import annotations

import copy
import importlib
import re
import shlex
import sys
import types
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from tests.conftest import compose_train
from tests.matrices import options
from vtcc.config.schema import RENAMED_KEYS
from vtcc.config.stored import RENAMED as STORED_RENAMES
from vtcc.config.types import MAPPINGS, SEQUENCES, _is_number, describe, matches, unranged_numbers
from vtcc.config.validate import checked_types, validate_config
from vtcc.errors import ConfigError
from vtcc.utils.cli import CONFIG_DIR, check_command_line, hydra_quoted

RUN = Path("/nonexistent/vtcc-run")  # composed, never built: nothing is written
GROUPS = ("data", "model", "objective", "augment", "trainer", "strategy", "callbacks", "logger", "experiment")


CONFIGS = [
    ("train", ()),
    *(("train", (f"{group}={option}",)) for group in GROUPS for option in options(group)),
    ("eval", ()),
    ("predict", ()),
]


@cache
def composed(name: str, overrides: tuple[str, ...]) -> DictConfig:
    """The config as the entry point receives it (no ``auto`` resolved yet)."""
    if name == "train":
        return compose_train(RUN, list(overrides), tiny=False, resolve=False)
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=[*overrides, f"paths.output_dir={RUN}"])


def config_id(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else ",".join(value)


@pytest.mark.parametrize(("name", "overrides"), CONFIGS, ids=config_id)
def test_every_shipped_config_passes(name, overrides):
    validate_config(composed(name, overrides))


# Keys whose value is text of the user's choosing (paths, names, labels): any word is right, so a
# number stands for the wrong type there. Every other string key is a choice: an unknown word is wrong.
FREE_TEXT = {
    "task_name": "the runs' folder name",
    "ckpt_path": "a checkpoint file",
    "init_from": "a checkpoint file",
    "input": "vtcc-predict's images",
    "output": "vtcc-predict's folder",
    "curation": "a curation.json file",
    "paths.log_dir": "a folder",
    "paths.output_dir": "a folder",
    "features.cache_dir": "a folder",
    "data.root": "the data's folder or file",
    "data.name": "a label for logs and reports",
    "data.dataset.name": "a label for logs and reports",
    "data.dataset.subdir": "a folder under data.root",
    "model.name": "a timm model name (timm checks it)",
    "model.checkpoint": "a weights file",
    "trainer.default_root_dir": "a folder",
    "callbacks.last_checkpoint.dirpath": "a folder",
    "callbacks.last_checkpoint.filename": "a file name pattern",
    "callbacks.last_checkpoint.monitor": "a logged metric's name",
    "callbacks.best_by_labels.dirpath": "a folder",
    "callbacks.best_by_labels.filename": "a file name pattern",
    "callbacks.best_by_labels.monitor": "a logged metric's name",
    "callbacks.save_on_interrupt.dirpath": "a folder",
    "logger.csv.save_dir": "a folder",
    "logger.csv.name": "a folder name",
    "logger.tensorboard.save_dir": "a folder",
    "logger.tensorboard.name": "a folder name",
    "logger.mlflow.experiment_name": "MLflow's experiment name",
    "logger.mlflow.run_name": "MLflow's run name",
    "logger.mlflow.save_dir": "a folder",
    "logger.wandb.project": "W&B's project name",
    "logger.wandb.save_dir": "a folder",
}
# Keys that accept any value at all, so no wrong type exists to try.
ANY_VALUE = {
    "model.model_kwargs.zero_init_last": "model_kwargs go to timm.create_model as they are; timm checks them",
    "logger.csv.version": "Lightning's version: a number or a folder name (int | str | None)",
    "logger.tensorboard.version": "Lightning's version: a number or a folder name (int | str | None)",
}
UNKNOWN_WORD = "no_such_choice"


def leaves(raw: Any, where: str = "", owner: str = ""):
    """``(dotted key, the target of the node it belongs to)`` of every leaf; lists are leaves."""
    if not isinstance(raw, dict) or not raw:
        yield where, owner
        return
    owner = raw.get("_target_", owner if where else "")
    for key, value in raw.items():
        if key != "_target_":  # which targets may be built is the allowlist's check
            yield from leaves(value, f"{where}.{key}" if where else key, owner)


def wrong_value(key: str, current: Any) -> Any:
    if key in FREE_TEXT:
        return 7
    return UNKNOWN_WORD if isinstance(current, str) else "ten"


def refusal(cfg: DictConfig, key: str, value: Any) -> str | None:
    """The message of the ConfigError for ``key=value`` in ``cfg``, or None when it is accepted."""
    changed = copy.deepcopy(cfg)
    OmegaConf.update(changed, key, value, merge=False)
    try:
        validate_config(changed)
    except ConfigError as error:
        return str(error)
    return None


def test_a_wrong_type_at_every_key_is_refused_with_that_key():
    seen, problems = set(), []
    for name, overrides in CONFIGS:
        cfg = composed(name, overrides)
        for key, owner in leaves(OmegaConf.to_container(cfg, resolve=False)):
            if (key, owner) in seen:
                continue
            seen.add((key, owner))
            if key in ANY_VALUE:
                continue
            current = OmegaConf.select(cfg, key, throw_on_resolution_failure=False, throw_on_missing=False)
            bad = wrong_value(key, current)
            message = refusal(cfg, key, bad)
            where = f"{name} {' '.join(overrides)}: {key}={bad!r}"
            if message is None or not message.startswith(f"{key}={bad!r} "):
                problems.append(f"{where} gave {message!r}")
            elif "\n" in message:
                problems.append(f"{where} gave more than one line")
            if key in FREE_TEXT and refusal(cfg, key, UNKNOWN_WORD) is not None:
                problems.append(f"{where}: a word is refused, so {key} is no free text")
    assert not problems, "\n".join(problems)
    walked = {key for key, _ in seen}
    assert set(FREE_TEXT) | set(ANY_VALUE) <= walked  # the lists name keys that exist
    assert len(walked) > 150  # every group was walked


# ---- Ranges: every number's, from one table (vtcc.config.schema.RANGES), checked before any work.


def bare(annotation: Any) -> Any:
    """``annotation`` without its checks: the type alone."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return bare(args[0])
    if origin is Literal or not args:
        return annotation
    inner = tuple(arg if arg is Ellipsis else bare(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return Union[inner]  # noqa: UP007
    if origin in MAPPINGS:
        return origin[inner[0], inner[1]]
    return origin[inner] if origin is tuple or origin in SEQUENCES else annotation


def numeric_keys(cfg: DictConfig) -> dict[str, Any]:
    """``key: type`` for each key of ``cfg`` a number can be given to, as the validator checks it."""
    found = {}
    for key, annotation in checked_types(cfg).items():
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False, throw_on_missing=False)
        if isinstance(value, DictConfig):
            continue  # a node: its own keys are checked one by one
        loose = [kind for kind in unranged_numbers(annotation) if kind is not Any]
        if loose or any(matches(number, bare(annotation)) for number in (1, 0.5, [1], [0.5])):
            found[key] = annotation
    return found


def test_every_numeric_key_has_a_declared_range():
    """Every key of every shipped config that takes a number is checked against a range (a rule
    of RANGES, or its type's own), or is declared free there (FREE): a new numeric key without a
    rule fails here. A number under a key the validator does not check at all fails too."""
    problems, walked = [], set()
    for name, overrides in CONFIGS:
        cfg = composed(name, overrides)
        numeric = numeric_keys(cfg)
        walked |= set(numeric)
        for key, annotation in numeric.items():
            value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False, throw_on_missing=False)
            loose = [kind for kind in unranged_numbers(annotation) if kind is not Any or _is_number(value)]
            if loose:
                problems.append(f"{name} {' '.join(overrides)}: {key} ({describe(annotation)}) has no range")
        checked = checked_types(cfg)
        for key, _ in leaves(OmegaConf.to_container(cfg, resolve=False)):
            value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False, throw_on_missing=False)
            if _is_number(value) and key not in checked and key not in ANY_VALUE:
                problems.append(f"{name} {' '.join(overrides)}: {key}={value} is checked by nothing")
    assert not problems, "\n".join(sorted(set(problems)))
    assert {"data.num_workers", "data.eval_batch_size", "features.eval_batch_size", "seed"} <= walked
    assert len(walked) > 100


OUTSIDE = (-(2**40), -1, -0.5, 0, 0.5, 1, 1.5, 3, 4, 2**40)  # one of them is out of any range but FREE


def test_a_value_outside_its_range_is_refused_at_every_numeric_key():
    """For each numeric key, a value of the right type but out of its range is refused with one line
    that starts with the key and the value (the range reaches the validator at every key)."""
    seen, problems, tried = set(), [], 0
    for name, overrides in CONFIGS:
        cfg = composed(name, overrides)
        for key, annotation in numeric_keys(cfg).items():
            candidates = [*OUTSIDE, *([n] for n in OUTSIDE), [0.4, 0.4, 0.4, 0.7]]
            bad = next(
                (c for c in candidates if matches(c, bare(annotation)) and not matches(c, annotation)), None
            )
            if bad is None or (key, str(annotation)) in seen:
                continue  # FREE: any number is valid
            seen.add((key, str(annotation)))
            tried += 1
            message = refusal(cfg, key, bad)
            if message is None or not message.startswith(f"{key}={bad!r} must be ") or "\n" in message:
                problems.append(f"{name} {' '.join(overrides)}: {key}={bad!r} gave {message!r}")
    assert not problems, "\n".join(problems)
    assert tried > 100


@pytest.mark.parametrize(
    ("name", "overrides", "key", "bad", "words", "good"),
    [
        ("train", (), "data.num_workers", -1, "an integer >= 0", 0),
        ("train", (), "data.eval_batch_size", -1, "an integer >= 1", 1),
        ("train", ("data=features",), "data.eval_batch_size", 0, "an integer >= 1", 1),
        ("train", (), "features.eval_batch_size", 0, "an integer >= 1", 1),
        ("train", (), "num_clusters", 1, "an integer >= 2, auto or null", 2),
        ("train", (), "trainer.max_epochs", 0, "an integer >= 1 or null", 1),
        ("train", ("augment=cc",), "augment.view_a.hflip_p", 1.5, "a number in [0, 1]", 1.0),
        (
            "train",
            ("augment=cc",),
            "augment.view_a.crop_scale",
            [0.0, 1.0],
            "a list of numbers in (0, 1]",
            [0.1, 1],
        ),
        ("train", ("augment=cc",), "augment.view_a.blur_kernel", 4, "an odd integer >= 1 or null", 5),
        ("train", (), "module.instance_loss.temperature", 0, "a number > 0", 0.1),
        ("train", (), "module.optimizer.lr", 0, "a number > 0", 1e-4),
        ("train", ("objective=temi",), "module.temi_loss.prior_momentum", 1, "a number in [0, 1)", 0.0),
        (
            "train",
            ("objective=turtle",),
            "module.generalization_folds",
            1,
            "an integer 0 (no score) or >= 2",
            0,
        ),
        ("train", (), "trainer.devices", 0, "an integer -1 (all) or >= 1", -1),
        ("eval", (), "trainer.devices", [-1], "a list of integers >= 0", [0]),
        ("predict", (), "seed", -1, "an integer between 0 and 2**32 - 1 or null", 2**32 - 1),
        ("predict", (), "batch_size", 0, "an integer >= 1", 1),
    ],
)
def test_a_value_out_of_range_names_the_range(name, overrides, key, bad, words, good):
    cfg = composed(name, overrides)
    message = refusal(cfg, key, bad)
    assert message.startswith(f"{key}={bad!r} must be ") and words in message, message
    assert refusal(cfg, key, good) is None  # the range's end is in it


@pytest.mark.parametrize("data", ["folder", "folder_streaming", "shards", "cifar10"])
def test_the_image_datamodules_shared_keys_are_checked_though_they_pass_through_settings(data):
    """The image datamodules take the shared keys as **settings (vtcc.data.ImageSettings): the
    validator still knows every key (a misspelt one is refused naming the datamodule and the right
    one), types them, and lets the data's auto keys stay auto."""
    cfg = composed("train", (f"data={data}",))
    target = cfg.data._target_
    changed = copy.deepcopy(cfg)
    with open_dict(changed):
        changed.data.batchsize = 8
    refused = rf"^data.batchsize=8 is not a setting of {re.escape(target)}: "
    with pytest.raises(ConfigError, match=refused) as raised:
        validate_config(changed)
    assert "batch_size, " in str(raised.value)  # the keys it takes are listed, the shared ones too
    assert refusal(cfg, "data.batch_size", 1.5).startswith("data.batch_size=1.5 must be an integer >= 1")
    assert refusal(cfg, "data.num_workers", -1).startswith("data.num_workers=-1 must be an integer >= 0")
    for key in ("image_size", "in_chans", "mean", "std"):
        assert refusal(cfg, f"data.{key}", "auto") is None


@pytest.mark.parametrize("override", ["data.num_workers=-1", "data.eval_batch_size=-1"])
def test_an_out_of_range_value_stops_the_run_before_any_work(train_in_process, tmp_path, override):
    code, stderr = train_in_process(override)
    assert code == 2 and stderr.startswith(f"vtcc: error: {override} must be an integer >= ")
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()  # nothing written: not even the run folder


# ---- Renamed keys: the new name, from one table (vtcc.config.schema.RENAMED_KEYS).


def test_the_renamed_keys_name_keys_that_exist_now():
    for old, (new, entry_points) in RENAMED_KEYS.items():
        for name in entry_points:
            cfg = composed(name, ())
            assert OmegaConf.select(cfg, new, default="absent") != "absent", (old, new)
            assert OmegaConf.select(cfg, old, default="absent") == "absent", old
    stored = {f"{section}.{old}": f"{section}.{new}" for section, old, new in STORED_RENAMES}
    assert stored.items() <= {old: new for old, (new, _) in RENAMED_KEYS.items()}.items()


@pytest.mark.parametrize(
    ("name", "item", "fix"),
    [
        ("train", "module.num_heads=5", "use module.num_cluster_heads=5"),
        ("train", "+module.num_heads=5", "use +module.num_cluster_heads=5"),
        ("predict", "save_embeddings=true", "use embeddings=true"),
        ("eval", "accelerator=cpu", "use trainer.accelerator=cpu"),
    ],
)
def test_a_renamed_key_on_the_command_line_names_its_new_name(name, item, fix):
    old = item.split("=")[0].lstrip("+")
    with pytest.raises(ConfigError) as refused:
        check_command_line(["-m", item], name)
    assert str(refused.value) == f"{item}: {old} was renamed {RENAMED_KEYS[old][0]}; {fix}"
    check_command_line([item], next(n for n in ("train", "eval", "predict") if n not in RENAMED_KEYS[old][1]))


def test_a_renamed_key_in_a_config_names_its_new_name():
    cfg = composed("train", ("+module.num_heads=5",))
    with pytest.raises(ConfigError, match=r"^module.num_heads=5: .* renamed module.num_cluster_heads; "):
        validate_config(cfg)


# ---- A value with a space: how to quote it, before Hydra's parser error.


@pytest.mark.parametrize(
    ("argv", "hint", "value"),
    [
        (["data=folder", "data.root=/my", "images"], "'data.root=\"/my images\"'", "/my images"),
        (["data.root=/my", "big", "images", "seed=1"], "'data.root=\"/my big images\"'", "/my big images"),
        (["+data.root=/my (images)"], "'+data.root=\"/my (images)\"'", "/my (images)"),
        (["-m", "data.root=/it's", "here"], "'data.root=\"/it'\"'\"'s here\"'", "/it's here"),
    ],
)
def test_a_value_with_a_space_is_one_line_saying_how_to_quote_it(argv, hint, value):
    with pytest.raises(ConfigError) as refused:
        check_command_line(argv, "train")
    assert str(refused.value) == f"data.root: the value has a space; quote it: {hint}"
    [item] = shlex.split(hint)  # one argument, as the shell hands it on
    assert OverridesParser.create().parse_overrides([item])[0].value() == value


@pytest.mark.parametrize(
    "value", ["/my images", "it's here", 'a "quoted" word', "both ' and \"", "C:\\my dir\\", 'a\\"b']
)
def test_the_quoting_hydra_is_told_keeps_the_value_whole(value):
    quoted = hydra_quoted(value)
    parsed = OverridesParser.create().parse_overrides([f"data.root={quoted}"])[0]
    assert parsed.value() == value
    hint = str(pytest.raises(ConfigError, check_command_line, [f"data.root={value} (x)"], "train").value)
    [item] = shlex.split(hint.split("quote it: ", 1)[1])
    assert OverridesParser.create().parse_overrides([item])[0].value() == f"{value} (x)"


@pytest.mark.parametrize(
    "argv",
    [
        ["data.root=/my images"],  # quoted by the shell: Hydra keeps the space
        ['data.root="/my images"'],
        ["-m", "seed=1,2", "--cfg", "job", "~logger", "hydra.run.dir=x"],
        ["--config-name", "train", "seed=1"],
        ["images"],  # no key before it: Hydra's own error
        ["--no-such-flag", "a=b c"],
    ],
)
def test_other_command_lines_are_left_to_hydra(argv):
    check_command_line(argv, "train")


@pytest.mark.parametrize(
    ("module", "argv", "line"),
    [
        ("vtcc.train", ["data.root=/my", "images"], "data.root: the value has a space; quote it: "),
        (
            "vtcc.evaluate",
            ["accelerator=cpu"],
            "accelerator=cpu: accelerator was renamed trainer.accelerator",
        ),
        (
            "vtcc.predict",
            ["save_embeddings=true"],
            "save_embeddings=true: save_embeddings was renamed embeddings",
        ),
    ],
)
def test_each_entry_point_checks_its_command_line_before_hydra(module, argv, line, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module, *argv])
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(module).main()
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith(f"vtcc: error: {line}") and err.count("\n") == 1


def test_a_curation_given_to_training_without_its_run_is_refused_not_ignored(train_in_process, tmp_path):
    code, stderr = train_in_process("curation=curation.json")
    lines = [line for line in stderr.splitlines() if line.startswith("vtcc: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr
    assert "add init_from=" in lines[0] and "vtcc-predict" in lines[0]  # training with it, or sorting
    assert not (tmp_path / "run").exists()
