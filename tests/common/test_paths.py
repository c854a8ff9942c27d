"""Paths named by flows (and the API) stay under their roots; outputs never follow a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag_core.codes import ErrorCategory, ErrorCode
from rag_core.common.paths import confine, output_path, write_private
from rag_core.config import Settings
from rag_core.errors import PathOutsideRootsError


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "a.jsonl").write_text("{}\n")
    return folder


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "elsewhere" / "credentials.json"
    secret.parent.mkdir()
    secret.write_text('{"password": "s3cret"}')
    return secret


def _refused(path: str | Path, roots: list[Path]) -> PathOutsideRootsError:
    with pytest.raises(PathOutsideRootsError) as caught:
        confine(path, roots, setting="RAG_SOURCE_ROOTS")
    error = caught.value
    assert error.code is ErrorCode.PATH_OUTSIDE_ROOTS
    assert error.code.category is ErrorCategory.REFUSED
    assert (error.path, error.roots, error.setting) == (str(path), [str(r) for r in roots],
                                                       "RAG_SOURCE_ROOTS")
    assert repr(str(path)) in str(error)
    assert all(str(r) in str(error) for r in roots)
    return error


def test_a_path_under_a_root_is_returned_resolved(root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    assert confine(root / "docs" / "a.jsonl", [other, root], setting="X") == \
        (root / "docs" / "a.jsonl").resolve()
    assert confine(root, [root], setting="X") == root.resolve()  # a root itself counts
    # Relative paths are taken from the working folder (the project folder).
    monkeypatch.chdir(tmp_path)
    assert confine("root/docs/a.jsonl", [root], setting="X") == (root / "docs/a.jsonl").resolve()
    # A missing file inside is returned, for its reader to report as missing.
    assert confine(root / "docs" / "b.jsonl", [root], setting="X") == \
        (root / "docs" / "b.jsonl").resolve()


def test_paths_outside_every_root_are_refused(root: Path, outside: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _refused(outside, [root])
    _refused(outside.parent / "missing.jsonl", [root])  # refused whether it exists or not
    _refused(root / ".." / "elsewhere" / "credentials.json", [root])
    _refused(root / "docs" / "nope" / ".." / ".." / ".." / "elsewhere", [root])
    monkeypatch.chdir(root)
    _refused("../elsewhere/credentials.json", [root])
    _refused("/etc/passwd", [root])
    _refused(root / "docs" / "a.jsonl", [])  # no roots configured: nothing is allowed
    _refused("docs/a\x00.jsonl", [root])  # unusable, named, no ValueError


def test_symbolic_links_out_of_a_root_are_refused(root: Path, outside: Path) -> None:
    (root / "creds.jsonl").symlink_to(outside)
    error = _refused(root / "creds.jsonl", [root])
    assert str(outside) in str(error)  # the operator sees where the link leads
    (root / "docs" / "out").symlink_to(outside.parent, target_is_directory=True)
    _refused(root / "docs" / "out" / "credentials.json", [root])
    loop = root / "loop"
    loop.symlink_to(loop)
    _refused(loop, [root])
    # A link inside that stays inside is fine, and so is a root reached through a link.
    (root / "alias.jsonl").symlink_to(root / "docs" / "a.jsonl")
    assert confine(root / "alias.jsonl", [root], setting="X") == \
        (root / "docs" / "a.jsonl").resolve()
    linked_root = root.parent / "root-link"
    linked_root.symlink_to(root, target_is_directory=True)
    assert confine(root / "docs" / "a.jsonl", [linked_root], setting="X").is_file()


def test_outputs_are_names_under_the_outputs_folder(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    assert output_path("answers.jsonl", outputs) == outputs.resolve() / "answers.jsonl"
    assert outputs.stat().st_mode & 0o777 == 0o700
    assert output_path("tenant-a/run1.jsonl", outputs) == \
        outputs.resolve() / "tenant-a" / "run1.jsonl"
    assert (outputs / "tenant-a").stat().st_mode & 0o777 == 0o700
    assert output_path(outputs / "x.jsonl", outputs) == outputs.resolve() / "x.jsonl"


def test_outputs_outside_or_through_links_are_refused_and_touch_nothing(
        tmp_path: Path, outside: Path) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    before = outside.read_text()
    (outputs / "out").symlink_to(outside.parent, target_is_directory=True)
    (outputs / "link.jsonl").symlink_to(outside)
    (outputs / "inner.jsonl").write_text("kept\n")
    (outputs / "to-inner.jsonl").symlink_to(outputs / "inner.jsonl")
    (outputs / "folder").mkdir()
    for name in ["../elsewhere/credentials.json", str(outside), "a/../../x.jsonl",
                 "out/credentials.json", "out/new/x.jsonl", "link.jsonl", "to-inner.jsonl",
                 "folder", "folder/", "..", ""]:
        with pytest.raises(PathOutsideRootsError) as caught:
            output_path(name, outputs)
        assert caught.value.path == name and caught.value.setting == "RAG_OUTPUTS_DIR"
    assert outside.read_text() == before
    assert sorted(p.name for p in outside.parent.iterdir()) == ["credentials.json"]
    assert (outputs / "inner.jsonl").read_text() == "kept\n"
    assert not (tmp_path / "x.jsonl").exists()


def test_write_private_replaces_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "answers.jsonl"
    target.write_text("previous run\n")
    os.chmod(target, 0o644)
    with pytest.raises(RuntimeError), write_private(target) as handle:
        handle.write("half")
        raise RuntimeError("the run failed")
    assert target.read_text() == "previous run\n"  # nothing stored is lost
    with write_private(target) as handle:
        handle.write("new run\n")
    assert target.read_text() == "new run\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["answers.jsonl"]  # no temporary left


def test_settings_default_roots(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    state = (tmp_path / "state").resolve()
    assert settings.source_roots[0] == state / "sources"
    assert settings.questions_roots[0] == state / "questions"
    assert settings.outputs_dir == state / "outputs"
    # The shipped demo data stays reachable (prefect.yaml's default parameters name it).
    from rag_core.config import scifact_dir

    assert confine(scifact_dir() / "corpus.jsonl.gz", settings.source_roots, setting="X")
