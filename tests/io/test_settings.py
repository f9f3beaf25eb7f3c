"""Settings files: one loader, errors that name the file and every offending key, renamed keys
refused with their new names, and every settings model on the one strict base."""

import importlib
import inspect
import pkgutil

import pytest
from pydantic import BaseModel

import cai_ray
from cai_ray.config import load_config
from cai_ray.io.layout import KEY_PREFIX_MAX_LENGTH, sample_key
from cai_ray.io.samples import MASK_MEMBER
from cai_ray.io.settings import ConfigError, Settings
from cai_ray.io.tar import build_tar
from tests.test_layers import ADAPTER_ONLY

VALID = "inputs: {paths: [x]}\noutput: {path: o}\n"


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return str(path)


def test_errors_name_the_file_and_each_key(tmp_path):
    path = _write(tmp_path, VALID + "cai: {blend: glue, quotas: {large: -1}}\nseed: -3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"invalid config file {path}:")
    for key in ("cai.blend", "cai.quotas", "seed"):
        assert f"\n  {key}: " in message
    assert "large must be >= 0" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("inputs: [unclosed\n", "invalid config file .*: not valid YAML"),
        ("- a list\n", "invalid config file .*: it must hold a mapping"),
        (VALID + "outputs: {}\n", "outputs: Extra inputs are not permitted"),
    ],
)
def test_unreadable_or_misspelt_files(tmp_path, text, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(_write(tmp_path, text))
    with pytest.raises(ConfigError, match="config file not found: .*nothing.yaml"):
        load_config(tmp_path / "nothing.yaml")


@pytest.mark.parametrize(
    ("section", "old", "new"),
    [
        ("storage: {max_attempts: 3}", "max_attempts", "request_attempts"),
        ("cai: {max_attempts: 3}", "cai.max_attempts", "cai.max_draws"),
        ("synthesizer: {method: nsa, max_attempts: 3}", "synthesizer.max_attempts", "max_draws"),
    ],
)
def test_renamed_keys_are_refused_with_their_new_name(tmp_path, section, old, new):
    with pytest.raises(ConfigError, match=f"'{old}' was renamed: it is now '.*{new}'"):
        load_config(_write(tmp_path, VALID + section + "\n"))


def test_the_new_names_load(tmp_path):
    text = VALID + "daad: {path: d}\nstorage: {request_attempts: 3}\ncai: {max_draws: 4}\n"
    config = load_config(_write(tmp_path, text))
    assert config.storage.request_attempts == 3 and config.cai.max_draws == 4


def test_a_key_prefix_too_long_for_a_tar_member_is_refused_with_the_config(tmp_path):
    """Fails on a4045c6: a 95-character prefix passed validation and the job failed only when
    its first shard was written. The longest allowed prefix fits with the widest indices."""
    longest = "p" * KEY_PREFIX_MAX_LENGTH
    widest = sample_key(longest, 10**12 - 1, 9_999)
    assert build_tar([(widest, {MASK_MEMBER: b"m", "json": b"{}", "png": b"i"})])
    fits = VALID.replace("path: o", f"path: o, samples_key_prefix: {longest}")
    assert load_config(_write(tmp_path, fits + "daad: {path: d}\n"))
    too_long = VALID.replace("path: o", f"path: o, samples_key_prefix: {'p' * 95}")
    with pytest.raises(ConfigError, match=r"output.samples_key_prefix: .*at most 64 characters"):
        load_config(_write(tmp_path, too_long))


def _package_modules():
    """Every module of cai_ray, imported; an integration whose extra is not installed is left
    out (its adapter may not import without it)."""
    for info in pkgutil.walk_packages(cai_ray.__path__, "cai_ray."):
        try:
            yield importlib.import_module(info.name)
        except ModuleNotFoundError as missing:
            if (missing.name or "").split(".")[0] not in ADAPTER_ONLY:
                raise


def test_every_settings_model_extends_the_strict_base():
    """A model on pydantic's BaseModel would accept a misspelt key silently and skip renamed-key
    refusal: every pydantic model in cai_ray is a settings section, so each extends Settings."""
    models = {
        f"{module.__name__}.{name}": cls
        for module in _package_modules()
        for name, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and issubclass(cls, BaseModel)
    }
    assert len(models) > 30, sorted(models)
    assert [name for name, cls in models.items() if not issubclass(cls, Settings)] == []
    # the naming rule of DEVELOPERS.md: Settings is the base, a model says what kind it is
    assert [name for name in models if name.endswith("Settings")] == [
        "cai_ray.io.settings.Settings"
    ]
