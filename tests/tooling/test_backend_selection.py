"""Backend selection, the keyring model: explicit > $MSIV2_ASYNC_BACKEND (name, module:Class) > priority.

Discovery is replaced by fake entry points (a pure unit); one test reads the real, installed entry point.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pytest
import tooling_fakes as fakes

from msiv2_async import (
    BackendNotFoundError,
    ConfigurationError,
    MsiV2Client,
    MsiV2UnavailableError,
    SoftwareBackend,
    available_backends,
    get_backend,
)
from msiv2_async import backends as backends_module


@dataclass(frozen=True)
class FakeDist:
    name: str
    version: str


@dataclass(frozen=True)
class FakeEntryPoint:
    """What discovery reads from an importlib.metadata EntryPoint."""

    name: str
    target: type[Any] | BaseException
    dist: FakeDist | None = FakeDist("msiv2-async-fakes", "9.9")

    @property
    def value(self) -> str:
        return f"tooling_fakes:{getattr(self.target, '__name__', 'Broken')}"

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


Install = Callable[..., None]


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Replace the entry points with fakes: ``install(Strong, NotHere, ...)`` or FakeEntryPoint objects."""

    def _install(*targets: Any) -> None:
        points = [t if isinstance(t, FakeEntryPoint) else FakeEntryPoint(t.name, t) for t in targets]
        monkeypatch.setattr(backends_module, "_entry_points", lambda: points)
        backends_module._clear_caches()

    for cls in (fakes.FakeBackend, fakes.Strong, fakes.Alpha, fakes.NotHere):
        monkeypatch.setattr(cls, "calls", 0)
    backends_module._clear_caches()
    yield _install
    backends_module._clear_caches()


ENV_NONE: dict[str, str] = {}


def test_explicit_instance_beats_environment_and_priority(install: Install) -> None:
    install(fakes.Strong)
    instance = SoftwareBackend()
    assert get_backend(instance, {"MSIV2_ASYNC_BACKEND": "strong"}) is instance


def test_explicit_name_beats_environment(install: Install) -> None:
    install(fakes.Strong, fakes.Alpha)
    assert isinstance(get_backend("alpha", {"MSIV2_ASYNC_BACKEND": "strong"}), fakes.Alpha)


def test_environment_name_beats_priority(install: Install) -> None:
    install(fakes.Strong, fakes.Alpha)
    assert isinstance(get_backend(None, {"MSIV2_ASYNC_BACKEND": "alpha"}), fakes.Alpha)


def test_environment_module_class_loads_an_unregistered_backend(install: Install) -> None:
    install(fakes.Strong)
    backend = get_backend(None, {"MSIV2_ASYNC_BACKEND": "tooling_fakes:Unregistered"})
    assert isinstance(backend, fakes.Unregistered)


def test_environment_module_class_that_does_not_import_is_a_clear_error(install: Install) -> None:
    install(fakes.Strong)
    with pytest.raises(BackendNotFoundError, match=r"tooling_fakes:Missing.*MSIV2_ASYNC_BACKEND.*Missing"):
        get_backend(None, {"MSIV2_ASYNC_BACKEND": "tooling_fakes:Missing"})


def test_highest_priority_viable_backend_wins(install: Install) -> None:
    install(fakes.Alpha, fakes.NotHere, fakes.Strong)
    assert isinstance(get_backend(None, ENV_NONE), fakes.Strong)


def test_priority_ties_are_broken_by_name(install: Install) -> None:
    install(fakes.Beta, fakes.Alpha)
    assert isinstance(get_backend(None, ENV_NONE), fakes.Alpha)


def test_a_backend_asked_for_by_name_that_is_not_viable_is_an_error_not_a_fallback(install: Install) -> None:
    install(fakes.NotHere, fakes.Alpha)
    with pytest.raises(BackendNotFoundError, match=r"'nothere'.*not viable here: needs Windows with VBS"):
        get_backend(None, {"MSIV2_ASYNC_BACKEND": "nothere"})


def test_unknown_name_lists_what_is_installed(install: Install) -> None:
    install(fakes.NotHere, fakes.Alpha)
    with pytest.raises(BackendNotFoundError) as caught:
        get_backend("tpm", ENV_NONE)
    message = str(caught.value)
    assert "'tpm'" in message
    assert "alpha (priority 5" in message
    assert "nothere (not viable: needs Windows with VBS" in message
    assert "software (priority 1" in message


def test_no_viable_backend_error_says_why_each_is_not_viable(
    install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends_module, "_BUILT_IN", {})
    install(fakes.NotHere, fakes.Crashing, FakeEntryPoint("broken", ImportError("no module named winreg")))
    with pytest.raises(BackendNotFoundError) as caught:
        get_backend(None, ENV_NONE)
    message = str(caught.value)
    assert "no viable key backend" in message
    assert "nothere (not viable: needs Windows with VBS" in message
    assert "crashing (not viable: priority() failed (RuntimeError: bug in priority)" in message
    assert "broken (not viable: could not be loaded (ImportError: no module named winreg)" in message
    assert isinstance(caught.value, MsiV2UnavailableError)


def test_disabled_autoload_keeps_only_the_built_ins(install: Install) -> None:
    install(fakes.Strong)
    environ = {"MSIV2_ASYNC_DISABLE_PLUGIN_AUTOLOAD": "1"}
    assert [info.name for info in available_backends(environ)] == ["software"]
    assert type(get_backend(None, environ)) is SoftwareBackend
    with pytest.raises(BackendNotFoundError, match="plugins are not loaded"):
        get_backend("strong", environ)
    assert isinstance(
        get_backend(None, {**environ, "MSIV2_ASYNC_BACKEND": "tooling_fakes:Strong"}), fakes.Strong
    )


def test_a_plugin_that_raises_while_loading_is_logged_and_skipped(
    install: Install, caplog: pytest.LogCaptureFixture
) -> None:
    install(FakeEntryPoint("broken", ImportError("cffi missing")), fakes.Alpha)
    with caplog.at_level(logging.ERROR, logger="msiv2_async.backends"):
        backend = get_backend(None, ENV_NONE)
    assert isinstance(backend, fakes.Alpha)
    assert any("'broken'" in record.getMessage() for record in caplog.records)
    broken = next(info for info in available_backends(ENV_NONE) if info.name == "broken")
    assert broken.priority is None
    assert broken.reason == "could not be loaded (ImportError: cffi missing)"


def test_a_plugin_cannot_take_a_built_in_name(install: Install) -> None:
    install(fakes.Impostor)
    assert type(get_backend(None, ENV_NONE)) is SoftwareBackend


def test_available_backends_reports_priority_reason_strength_and_distribution(install: Install) -> None:
    install(fakes.Strong, fakes.NotHere)
    infos = {info.name: info for info in available_backends(ENV_NONE)}
    assert [info.name for info in available_backends(ENV_NONE)] == ["strong", "software", "nothere"]
    strong, not_here = infos["strong"], infos["nothere"]
    assert (strong.priority, strong.reason, strong.binding_strength) == (10.0, None, "keyguard")
    assert strong.supports_attestation is True
    assert (strong.distribution, strong.version, strong.entry_point) == (
        "msiv2-async-fakes",
        "9.9",
        "tooling_fakes:Strong",
    )
    assert not_here.priority is None
    assert not not_here.viable
    assert not_here.reason == "needs Windows with VBS (no Virtual Iso key property)"


def test_viability_is_evaluated_once_per_process(install: Install) -> None:
    install(fakes.Strong, fakes.NotHere)
    for _ in range(3):
        get_backend(None, ENV_NONE)
        available_backends(ENV_NONE)
    assert fakes.Strong.calls == 1
    assert fakes.NotHere.calls == 1


def test_a_non_backend_instance_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="KeyBackend instance"):
        get_backend(object(), ENV_NONE)  # type: ignore[arg-type]


def test_client_refuses_a_named_backend_that_is_not_viable(install: Install) -> None:
    install(fakes.NotHere)
    with pytest.raises(BackendNotFoundError, match="needs Windows"):
        MsiV2Client(backend="nothere", imds_endpoint="http://127.0.0.1:9")


def test_the_installed_software_entry_point_is_discovered_from_importlib_metadata() -> None:
    backends_module._clear_caches()
    points = {point.name: point for point in backends_module._entry_points()}
    assert points["software"].value == "msiv2_async.backends.software:SoftwareBackend"
    assert points["software"].load() is SoftwareBackend
    software = next(info for info in available_backends({}) if info.name == "software")
    assert software.entry_point == "msiv2_async.backends.software:SoftwareBackend"
    assert software.distribution == "msiv2-async"
    assert software.version == metadata.version("msiv2-async")
    assert software.priority == 1.0


def test_importing_the_package_evaluates_no_backend() -> None:
    code = (
        "import msiv2_async, msiv2_async.backends as b\n"
        "print(len(b._discovered), len(b._viability))\n"
        "msiv2_async.available_backends()\n"
        "print(len(b._discovered), len(b._viability) >= 1)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["0", "0", "1", "True"]
