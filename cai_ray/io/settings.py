"""Settings files: the one YAML loader (a local file or an s3:// object, so cluster jobs keep
their configs next to their data), the strict base model every settings section uses, and the
error that names the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from cai_ray.io import storage


class Settings(BaseModel):
    """A settings section: unknown keys are errors (a typo fails at load, not mid-job), and a
    key that was renamed is refused with its new name (``renamed``: old dotted key -> new)."""

    model_config = ConfigDict(extra="forbid")
    renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_keys(cls, data: Any) -> Any:
        for old, new in cls.renamed.items():
            *parents, key = old.split(".")
            section = data
            for parent in parents:
                section = section.get(parent) if isinstance(section, dict) else None
            if isinstance(section, dict) and key in section:
                raise ValueError(f"'{old}' was renamed: it is now '{new}'")
        return data


class ConfigError(ValueError):
    """A settings file that is missing, not YAML, or not valid; the message says where."""


Model = TypeVar("Model", bound=BaseModel)


def read_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The mapping a YAML settings file holds."""
    file = str(path)
    if not storage.exists(file) or (storage.is_local(file) and not Path(file).is_file()):
        raise ConfigError(f"{what} file not found: {file}")
    try:
        raw = yaml.safe_load(storage.read_bytes(file))
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid {what} file {file}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid {what} file {file}: it must hold a mapping at the top level")
    return raw


def validate_settings(raw: dict[str, Any], model: type[Model], what: str, file: str) -> Model:
    """``raw`` as ``model``; an invalid value is a :class:`ConfigError` naming the file and each
    offending key."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(map(str, error['loc'])) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid {what} file {file}:\n{problems}") from exc


def load_settings(path: str | Path, model: type[Model], what: str = "config") -> Model:
    """Read and validate a YAML settings file (local or s3://)."""
    return validate_settings(read_yaml(path, what), model, what, str(path))
