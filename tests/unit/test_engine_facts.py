"""What migrator reads of an engine: its storage, its version, whether it can restore a
container, whether two image stores hold the same image. Pure functions on Docker's own
answers."""

from __future__ import annotations

from typing import Any

import pytest

from migrator.container import Spec
from migrator.errors import LabError
from migrator.hosts import SNAPSHOTTER, engine_major, restore_at_create, storage
from migrator.lab import _engine_and_store
from migrator.preflight import restore_refusal
from migrator.transfer import same_image


def test_storage_from_docker_info() -> None:
    assert storage({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}) == "overlay2"
    snap = {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
    assert storage(snap) == SNAPSHOTTER
    assert storage({"Driver": "btrfs"}) == "btrfs" and storage({}) == "unknown"


def test_engine_major() -> None:
    assert engine_major("28.5.2+dfsg4") == 28 and engine_major("20.10.24+dfsg1") == 20
    assert engine_major(None) == 0 and engine_major("dev") == 0


def _spec(mode: str, disabled: bool = False) -> Spec:
    return Spec({"Id": "x", "Config": {"NetworkDisabled": disabled}, "HostConfig": {"NetworkMode": mode}})


class FakeHost:
    """A host whose `runc migrator-info` answers as told (migrator's runc wrapper there or not)."""

    def __init__(self, wrapper: bool) -> None:
        self.wrapper, self.asked = wrapper, 0

    def ok(self, argv: list[str]) -> bool:
        assert argv == ["runc", "migrator-info"]
        self.asked += 1
        return self.wrapper


@pytest.mark.parametrize("version, mode, refused", [
    ("28.5.2", "bridge", True), ("28.5.2", "default", True), ("28.5.2", "mynet", True), ("28.5.2", "none", True),
    ("29.0.1", "bridge", True), ("28.5.2", "host", False), ("28.5.2", "container:abc", False),
    ("27.5.1", "bridge", False), ("26.1.5", "bridge", False), ("20.10.24", "bridge", False),
])
def test_docker_28_restores_a_network_of_its_own_only_with_the_runc_wrapper(version: str, mode: str,
                                                                          refused: bool) -> None:
    without = FakeHost(wrapper=False)
    why = restore_refusal(without, version, _spec(mode))  # type: ignore[arg-type]
    assert (why is not None) == refused
    if why:
        assert f"Docker {version}" in why and "runc wrapper" in why and "--network host" in why and "20.10-27" in why
    assert restore_refusal(FakeHost(wrapper=True), version, _spec(mode)) is None  # type: ignore[arg-type]
    assert restore_at_create(version) == version.startswith(("28", "29"))


def test_a_container_created_with_networking_disabled_restores_on_28() -> None:
    host = FakeHost(wrapper=False)
    assert restore_refusal(host, "28.5.2", _spec("bridge", disabled=True)) is None  # type: ignore[arg-type]
    assert host.asked == 0


def _image(id_: str, layers: list[str], cmd: list[str] | None = None) -> dict[str, Any]:
    return {"Id": id_, "RootFS": {"Type": "layers", "Layers": layers}, "Config": {"Cmd": cmd or ["redis-server"]}}


def test_same_image_across_stores_by_layers_and_config() -> None:
    overlay2 = _image("sha256:config", ["sha256:l1", "sha256:l2"])
    containerd = _image("sha256:manifest", ["sha256:l1", "sha256:l2"])
    assert same_image(overlay2, overlay2) and same_image(overlay2, containerd)
    assert not same_image(overlay2, _image("sha256:m2", ["sha256:l1"]))
    assert not same_image(overlay2, _image("sha256:m3", ["sha256:l1", "sha256:l2"], ["sh"]))
    assert not same_image({}, {})


def test_lab_engines_and_stores_are_checked() -> None:
    assert _engine_and_store("lab1", "20.10", "overlay2") == ("20.10", "overlay2")
    with pytest.raises(LabError, match="not one of"):
        _engine_and_store("lab1", "27", "overlay2")
    with pytest.raises(LabError, match="no containerd image store"):
        _engine_and_store("lab1", "20.10", "snapshotter")
    with pytest.raises(LabError, match="not one of"):
        _engine_and_store("lab1", "26", "zfs")
