"""Tests for cascade/bundle.py, cascade/embedded.py and the ``cascade bundle info`` command."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import cascade.embedded as embedded
from cascade.bundle import (
    MANIFEST_FILE,
    MANIFEST_KEY,
    WEIGHTS_FILE,
    BundleError,
    LoadedBundle,
    load_bundle,
    read_manifest,
    save_bundle,
    weights_summary,
)
from cascade.cli.main import app
from cascade.manifest import BundleManifest, ModelSpec
from tests.fixtures.models import TINY_SEGMENTER, assert_same_outputs, make_tiny_bundle, outputs


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, 3, 64, 128)


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path: Path) -> LoadedBundle:
    return load_bundle(tiny_bundle_path)


@pytest.fixture(scope="module")
def reference(loaded: LoadedBundle, images: torch.Tensor) -> dict[str, torch.Tensor]:
    return outputs(loaded, images)


# ------------------------------------------------------------------------------------------ round trips
def test_file_bundle_round_trip(
    tiny_bundle_path: Path, tiny_manifest: BundleManifest, loaded: LoadedBundle, images: torch.Tensor
) -> None:
    bundle = loaded
    assert bundle.manifest == tiny_manifest
    assert read_manifest(tiny_bundle_path) == tiny_manifest
    assert not bundle.classifier.training
    assert all(not m.training for m in bundle.segmenters.values())
    assert sorted(bundle.segmenters) == [1, 2, 3, 4]
    result = outputs(bundle, images)
    assert result["classifier"].shape == (2, 4)
    assert result["segmenter.3"].shape == (2, 1, 64, 128)
    with safe_open(str(tiny_bundle_path), framework="pt") as handle:
        keys = list(handle.keys())
    assert {k.split(".")[0] for k in keys} == {"classifier", "segmenter"}
    assert {k.split(".")[1] for k in keys if k.startswith("segmenter.")} == {"1", "2", "3", "4"}


def test_save_then_load_gives_identical_outputs(tmp_path: Path, loaded: LoadedBundle, images: torch.Tensor) -> None:
    source = loaded
    for target in (tmp_path / "copy.cascade.safetensors", tmp_path / "copy_dir"):
        save_bundle(target, source.manifest, source.classifier, source.segmenters)
        assert_same_outputs(outputs(load_bundle(target), images), outputs(source, images), atol=0.0)
    assert (tmp_path / "copy_dir" / MANIFEST_FILE).is_file()
    assert (tmp_path / "copy_dir" / WEIGHTS_FILE).is_file()
    assert json.loads((tmp_path / "copy_dir" / MANIFEST_FILE).read_text())["format_version"] == 1
    for written in (tmp_path / "copy.cascade.safetensors", tmp_path / "copy_dir" / WEIGHTS_FILE):
        assert written.stat().st_mode & 0o777 == 0o644, f"{written}: {oct(written.stat().st_mode)}"


def test_directory_form_matches_file_form(
    tiny_bundle_dir: Path, reference: dict[str, torch.Tensor], images: torch.Tensor
) -> None:
    assert tiny_bundle_dir.is_dir()
    assert_same_outputs(outputs(load_bundle(tiny_bundle_dir), images), reference, atol=0.0)


def test_fp16_storage_is_smaller_and_close(
    tmp_path: Path, tiny_bundle_path: Path, reference: dict[str, torch.Tensor], images: torch.Tensor
) -> None:
    half = make_tiny_bundle(tmp_path / "half.cascade.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * tiny_bundle_path.stat().st_size
    assert "F16" in weights_summary(half)["classifier"]["dtypes"]
    bundle = load_bundle(half)
    assert next(bundle.classifier.parameters()).dtype == torch.float32
    assert_same_outputs(outputs(bundle, images), reference, atol=5e-2)


def test_save_unwraps_wrappers_and_checks_inputs(tmp_path: Path, loaded: LoadedBundle) -> None:
    bundle = loaded
    wrapped = torch.nn.DataParallel(bundle.classifier)
    target = save_bundle(tmp_path / "w.safetensors", bundle.manifest, wrapped, bundle.segmenters)
    assert not any(k.startswith("classifier.module.") for k in load_file(str(target)))
    with pytest.raises(ValueError, match=r"one network per class id \[1, 2, 3, 4\], got \[1, 2\]"):
        save_bundle(
            tmp_path / "x.safetensors",
            bundle.manifest,
            bundle.classifier,
            {1: bundle.segmenters[1], 2: bundle.segmenters[2]},
        )
    with pytest.raises(ValueError, match="dtype must be None or one of"):
        save_bundle(tmp_path / "x.safetensors", bundle.manifest, bundle.classifier, bundle.segmenters, dtype=torch.int8)
    swapped = dict(bundle.segmenters) | {2: bundle.classifier}
    with pytest.raises(BundleError, match=r"saving bundle .*x\.safetensors: weights do not match"):
        save_bundle(tmp_path / "x.safetensors", bundle.manifest, bundle.classifier, swapped)
    assert not (tmp_path / "x.safetensors").exists()


# ------------------------------------------------------------------------------------------ broken bundles
def _copy_dir(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))


def _edit_manifest(directory: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    data = json.loads((directory / MANIFEST_FILE).read_text())
    edit(data)
    (directory / MANIFEST_FILE).write_text(json.dumps(data))
    return directory


def _rewrite_file(src: Path, dst: Path, *, metadata: dict[str, str] | None, drop: str | None = None) -> Path:
    tensors = load_file(str(src))
    if drop is not None:
        tensors.pop(drop)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle not found: .*absent\.cascade\.safetensors"):
        load_bundle(tmp_path / "absent.cascade.safetensors")


def test_truncated_file(tmp_path: Path, tiny_bundle_path: Path) -> None:
    data = tiny_bundle_path.read_bytes()
    for cut in (len(data) // 2, 20):
        path = tmp_path / f"cut{cut}.cascade.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(BundleError, match=rf"bundle .*cut{cut}\.cascade\.safetensors is corrupt"):
            load_bundle(path)


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.cascade.safetensors"
    path.write_text("hello, this is not a bundle\n")
    with pytest.raises(BundleError, match="is corrupt or not a safetensors file"):
        read_manifest(path)


def test_safetensors_without_manifest_key(tmp_path: Path, tiny_bundle_path: Path) -> None:
    path = _rewrite_file(tiny_bundle_path, tmp_path / "plain.safetensors", metadata={"format": "pt"})
    with pytest.raises(BundleError, match=rf"without a '{MANIFEST_KEY}' metadata entry: not a cascade bundle"):
        load_bundle(path)


def test_bad_manifest_json_in_file(tmp_path: Path, tiny_bundle_path: Path) -> None:
    path = _rewrite_file(tiny_bundle_path, tmp_path / "bad.safetensors", metadata={MANIFEST_KEY: "{oops"})
    with pytest.raises(BundleError, match=r"bad\.safetensors has a bad manifest: manifest is not valid JSON"):
        load_bundle(path)


def test_bad_manifest_json_in_dir(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    directory = _copy_dir(tiny_bundle_dir, tmp_path)
    (directory / MANIFEST_FILE).write_text("[1, 2")
    with pytest.raises(BundleError, match="has a bad manifest: manifest is not valid JSON"):
        load_bundle(directory)


@pytest.mark.parametrize("name", [MANIFEST_FILE, WEIGHTS_FILE])
def test_dir_missing_a_file(tmp_path: Path, tiny_bundle_dir: Path, name: str) -> None:
    directory = _copy_dir(tiny_bundle_dir, tmp_path)
    (directory / name).unlink()
    with pytest.raises(BundleError, match=f"bundle directory .* has no {name}"):
        load_bundle(directory)


def test_newer_format_version(tmp_path: Path, tiny_bundle_dir: Path, tiny_manifest: BundleManifest) -> None:
    directory = _edit_manifest(_copy_dir(tiny_bundle_dir, tmp_path), lambda d: d.update(format_version=7))
    with pytest.raises(BundleError, match="format_version 7 is newer than the supported version 1"):
        load_bundle(directory)
    text = json.dumps(tiny_manifest.to_dict() | {"format_version": 2})
    path = _rewrite_file(directory / WEIGHTS_FILE, tmp_path / "v2.safetensors", metadata={MANIFEST_KEY: text})
    with pytest.raises(BundleError, match=r"v2\.safetensors has a bad manifest: format_version 2 is newer"):
        read_manifest(path)


def test_unknown_architecture(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    directory = _edit_manifest(
        _copy_dir(tiny_bundle_dir, tmp_path), lambda d: d["segmenters"]["2"].update(arch="Segnet")
    )
    with pytest.raises(BundleError, match=r"cannot build segmenter 2 .*unknown smp architecture 'Segnet'.*'Unet'"):
        load_bundle(directory)


def test_unknown_backbone(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    directory = _edit_manifest(_copy_dir(tiny_bundle_dir, tmp_path), lambda d: d["classifier"].update(name="nonet"))
    with pytest.raises(BundleError, match=r"cannot build classifier .*unknown timm backbone 'nonet'"):
        load_bundle(directory)


def test_missing_weight_key(tmp_path: Path, tiny_bundle_path: Path, tiny_manifest: BundleManifest) -> None:
    key = next(k for k in load_file(str(tiny_bundle_path)) if k.startswith("segmenter.4."))
    meta = {MANIFEST_KEY: tiny_manifest.to_json()}
    path = _rewrite_file(tiny_bundle_path, tmp_path / "holey.safetensors", metadata=meta, drop=key)
    with pytest.raises(BundleError, match=rf"loading bundle .*holey\.safetensors.*missing weights \['{key}'\]"):
        load_bundle(path)


def test_unexpected_weight_key(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    directory = _copy_dir(tiny_bundle_dir, tmp_path)
    tensors = load_file(str(directory / WEIGHTS_FILE)) | {"segmenter.5.extra": torch.zeros(2)}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    with pytest.raises(BundleError, match=r"weights of no network \['segmenter.5.extra'\]"):
        load_bundle(directory)


def test_wrong_shape(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    kwargs = TINY_SEGMENTER.kwargs | {"decoder_pyramid_channels": 32}
    directory = _edit_manifest(
        _copy_dir(tiny_bundle_dir, tmp_path), lambda d: d["segmenters"]["1"].update(kwargs=kwargs)
    )
    with pytest.raises(BundleError, match=r"shape mismatch \['segmenter\.1\..*stored \(16,.*vs model \(32,"):
        load_bundle(directory)


# ------------------------------------------------------------------------------------------ embedded bundle
def test_embedded_bundle_missing_says_make_retrain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(embedded.BUNDLES_DIR_ENV, str(tmp_path))  # a folder without the demo bundle
    assert embedded.embedded_bundle_exists() is False
    with pytest.raises(BundleError, match="run `make retrain`"):
        embedded.resolve_bundle(None)
    assert embedded.resolve_bundle("x/y.safetensors") == Path("x/y.safetensors")


def test_embedded_bundle_resolves_when_present(tiny_as_embedded: Path) -> None:
    assert embedded.embedded_bundle_exists() is True
    assert embedded.resolve_bundle(None) == tiny_as_embedded
    assert embedded.embedded_bundle_path() == tiny_as_embedded
    assert embedded.embedded_bundle_names() == ("demo",)


def test_named_bundles_resolve_by_name(tmp_path: Path, tiny_bundle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "neu-seg.cascade.safetensors").write_bytes(tiny_bundle_path.read_bytes())
    monkeypatch.setenv(embedded.BUNDLES_DIR_ENV, str(data))
    assert "neu-seg" in embedded.embedded_bundle_names()
    for name in ("neu-seg", "embedded:neu-seg", Path("neu-seg")):
        assert embedded.resolve_bundle(name) == data / "neu-seg.cascade.safetensors"
    assert embedded.resolve_bundle("runs/neu-seg") == Path("runs/neu-seg")  # a path stays a path
    with pytest.raises(BundleError, match=r"no embedded bundle named 'nope'; shipped bundles: \['neu-seg'\]"):
        embedded.resolve_bundle("embedded:nope")


def test_shipped_bundles_include_demo() -> None:
    assert "demo" in embedded.embedded_bundle_names()


def test_embedded_path_is_package_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(embedded.BUNDLES_DIR_ENV, raising=False)
    path = embedded.embedded_bundle_path()
    assert path.parts[-3:] == ("cascade", "data", embedded.EMBEDDED_BUNDLE_FILE)
    monkeypatch.setenv(embedded.BUNDLES_DIR_ENV, "")  # empty counts as unset
    assert embedded.embedded_bundle_path() == path


# ------------------------------------------------------------------------------------------ CLI
def test_cli_bundle_info_text(tiny_bundle_path: Path) -> None:
    result = CliRunner().invoke(app, ["bundle", "info", str(tiny_bundle_path)])
    assert result.exit_code == 0, result.output
    assert "Format version: 1" in result.output
    assert "timm test_efficientnet" in result.output
    assert "4  blotches" in result.output
    assert "FPN tu-test_efficientnet" in result.output
    assert "code_version:" in result.output


def test_cli_bundle_info_json(tiny_bundle_dir: Path, tiny_manifest: BundleManifest) -> None:
    result = CliRunner().invoke(app, ["bundle", "info", str(tiny_bundle_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert BundleManifest.from_json(result.output) == tiny_manifest


def test_cli_bundle_info_defaults_to_embedded(tiny_as_embedded: Path) -> None:
    result = CliRunner().invoke(app, ["bundle", "info", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["classifier"] == ModelSpec("timm", "test_efficientnet").to_dict()


def test_cli_bundle_info_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bundle", "info", str(tmp_path / "nope.safetensors")])
    assert result.exit_code == 1
    assert "bundle not found" in result.output


def test_cli_bundle_refit_ood_changes_only_the_reference(
    tmp_path: Path, tiny_bundle_path: Path, tiny_bundle_dir: Path, score_dir: Path
) -> None:
    before = read_manifest(tiny_bundle_path)
    out = tmp_path / "refit.cascade.safetensors"
    args = ["bundle", "refit-ood", str(tiny_bundle_path), "--data", str(score_dir), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    after = read_manifest(out)
    assert before.ood is None and after.ood is not None and after.ood.images == len(list(score_dir.iterdir()))
    assert after.to_dict() | {"ood": None} == before.to_dict() | {"ood": None}
    old, new = load_file(str(tiny_bundle_path)), load_file(str(out))
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) and old[k].dtype == new[k].dtype for k in old)
    info = CliRunner().invoke(app, ["bundle", "info", str(out)])
    assert "OOD reference:  15 statistics" in info.output and "threshold" in info.output
    # in place, on the directory form
    copy = shutil.copytree(tiny_bundle_dir, tmp_path / "dir_bundle")
    assert CliRunner().invoke(app, ["bundle", "refit-ood", str(copy), "--data", str(score_dir)]).exit_code == 0
    assert read_manifest(copy).ood == after.ood
    refused = CliRunner().invoke(app, ["bundle", "refit-ood", str(copy), "--data", str(tmp_path / "dir_bundle")])
    assert refused.exit_code == 1 and "error:" in refused.output
