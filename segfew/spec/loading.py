"""Run specs from defaults < spec file (TOML or YAML) < flags, and their one-line errors."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import tomllib
import yaml
from pydantic import BaseModel, ValidationError

from segfew.errors import SpecError

S = TypeVar("S", bound=BaseModel)


def read_spec_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) spec file into a dict.

    Paths inside it are taken as they are (relative to the working directory), like flags.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"cannot read spec file ({e.strerror})", path) from None
    try:
        data = tomllib.loads(text) if Path(path).suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise SpecError(
            f"not valid {'TOML' if Path(path).suffix == '.toml' else 'YAML'}: "
            f"{str(e).splitlines()[0]}",
            path,
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError("a spec file must hold a table of settings", path)
    return dict(data)


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base``; ``None`` in overrides means 'not given'."""
    out: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            inner = out.get(key)
            out[key] = merge(inner if isinstance(inner, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def resolve_spec(
    model: type[S],
    overrides: Mapping[str, Any],
    spec_file: Path | None = None,
    defaults: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> S:
    """Validate ``defaults`` < spec file < flags into ``model``; errors become one-line SpecErrors.

    ``defaults`` are preset values (e.g. the paper's hyper-parameters); the spec file
    overrides them and flags override both. ``flags`` maps spec keys (``train.epochs``) to
    the command-line flag that sets them, so an error names both.
    """
    data = merge(defaults or {}, read_spec_file(spec_file) if spec_file else {})
    data = merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        given = _given(overrides)
        from_flags = all(_setting(err["loc"], given) for err in e.errors())
        raise SpecError(describe_validation_error(e, flags, model),
                        None if from_flags else spec_file) from None


def given_keys(overrides: Mapping[str, Any], spec_file: Path | None = None) -> set[str]:
    """The dotted spec keys a user set, by flag (not None) or in ``spec_file``; preset values
    are not among them."""
    return _given(overrides) | (_given(read_spec_file(spec_file)) if spec_file else set())


def _given(overrides: Mapping[str, Any], prefix: str = "") -> set[str]:
    """The dotted keys a command's flags set (not None): their errors are not the file's."""
    keys: set[str] = set()
    for k, v in overrides.items():
        if isinstance(v, Mapping) and all(isinstance(x, str) for x in v):
            keys |= _given(v, f"{prefix}{k}.")
        elif v is not None:
            keys.add(f"{prefix}{k}")
    return keys


def _setting(loc: Sequence[int | str], keys: Mapping[str, Any] | set[str]) -> str | None:
    """The key of ``keys`` that error location ``loc`` lies in (``frameworks.0`` →
    ``frameworks``), or None."""
    parts = [str(p) for p in loc]
    while parts:
        if (key := ".".join(parts)) in keys:
            return key
        parts.pop()
    return None


def _placed(model: type[BaseModel], name: str, prefix: str = "") -> list[str]:
    """Where a setting ``name`` is at home in ``model`` and its sections (``data.table``)."""
    found = [f"{prefix}{name}"] if name in model.model_fields else []
    for key, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            found += _placed(f.annotation, name, f"{prefix}{key}.")
    return found


def _near(model: type[BaseModel] | None, loc: Sequence[int | str]) -> str:
    """`` (did you mean 'x'?)`` for an unknown key close to a known one at its level; a key
    at home in another section is sent there (``[data] label_names`` is top-level)."""
    home = _placed(model, str(loc[-1])) if model is not None and loc else []
    if home:
        where = home[0]
        return (f" here; it is the top-level key {where!r}" if "." not in where else
                f" here; it belongs under [{where.rsplit('.', 1)[0]}] ({where})")
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model is not None else None
        annotation = field.annotation if field is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else None
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_validation_error(e: ValidationError, flags: Mapping[str, str] | None = None,
                              model: type[BaseModel] | None = None) -> str:
    """One line naming each offending key (and its flag, where one sets it) and the problem;
    an unknown key close to one of ``model``'s gets "did you mean"."""
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = ("unknown setting" + _near(model, err["loc"]) if err["type"] == "extra_forbidden"
               else err["msg"])
        msg = msg.removeprefix("Value error, ")
        key = _setting(err["loc"], flags or {})
        flag = (flags or {}).get(key) if key else None
        if flag and err["type"] == "missing":
            parts.append(f"{flag} is required (spec key {where})")
        elif flag:
            parts.append(f"{flag} (spec key {where}): {msg}")
        elif err["type"] == "missing":
            parts.append(f"spec key {where} is required")
        else:
            parts.append(f"{where}: {msg}" if where else msg)
    return "invalid settings: " + "; ".join(parts)
