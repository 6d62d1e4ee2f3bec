"""A spec key put in the wrong section is sent where it belongs, and ``label_map`` takes the
command line's ``"255:1"`` text in a spec file too."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(("text", "said"), [
    ('[data]\nlabel_names = ["background", "tumour"]\n',
     "data.label_names: unknown setting here; it is the top-level key 'label_names'"),
    ('table = "t.csv"\n', "table: unknown setting here; it belongs under [data] (data.table)"),
])
def test_a_key_in_the_wrong_section_is_sent_home(tmp_path: Path, text: str, said: str) -> None:
    from segfew.errors import SpecError
    from segfew.spec import ClassifierSpec, resolve_spec

    spec = tmp_path / "s.toml"
    spec.write_text(text)
    with pytest.raises(SpecError) as err:
        resolve_spec(ClassifierSpec, {"data": {"images": "i"}, "out": "m.pt",
                                      "framework": "scratch"}, spec)
    assert said in str(err.value)


def test_a_label_map_written_as_on_the_command_line_is_read() -> None:
    from pydantic import ValidationError

    from segfew.spec import DataSource

    assert DataSource(images="i", label_map="255:1,128:2").label_map == {255: 1, 128: 2}
    assert DataSource(images="i", label_map="consecutive").label_map == "consecutive"
    with pytest.raises(ValidationError, match="mapped twice"):
        DataSource(images="i", label_map="3:1,3:2")


def test_consecutive_is_refused_where_the_maps_are_not_all_seen(tmp_path: Path) -> None:
    """``train-classifier --masks --label-map consecutive`` was refused by the door in words
    naming no folder and no way on ("resolved by pretrain only")."""
    from segfew.errors import SpecError
    from segfew.spec import ClassifierSpec, ExperimentSpec, resolve_spec

    data = {"images": "imgs", "label_map": "consecutive"}
    with pytest.raises(SpecError, match=r"give OLD:NEW pairs here \(segfew inspect --images "
                                        r"imgs --labels fs --label-map consecutive prints"):
        resolve_spec(ClassifierSpec, {"data": data, "out": "m.pt", "framework": "measures",
                                      "masks": "fs"}, None)
    with pytest.raises(SpecError, match="taken by pretrain and inspect"):
        resolve_spec(ExperimentSpec, {"data": data, "frameworks": ["measures"], "sizes": [1],
                                      "masks": "fs", "label_names": ["background", "a"]}, None)
