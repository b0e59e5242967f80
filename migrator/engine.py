"""Docker's Engine API on a host, over the host's own SSH connection.

docker-py's SSH adapter reads keys and host keys only from ~/.ssh; here its HTTP runs over
the `Host`'s paramiko transport instead (`docker system dial-stdio` per connection), so the
inventory's key and known_hosts apply. docker-py has no checkpoint methods; the experimental
endpoints are called through its low-level request helpers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests
from docker.transport.sshconn import SSHHTTPAdapter
from urllib3._collections import RecentlyUsedContainer

from .errors import DockerError

if TYPE_CHECKING:
    from .transport import Host

MIN_API = "1.40"


class _HostAdapter(SSHHTTPAdapter):
    """SSHHTTPAdapter that uses an existing paramiko client instead of building its own."""

    def __init__(self, host: Host, timeout: int = 600) -> None:
        self._host = host
        self.ssh_host = host.spec.address
        self.timeout = timeout
        self.max_pool_size = 4
        self.pools = RecentlyUsedContainer(4, dispose_func=lambda p: p.close())
        requests.adapters.HTTPAdapter.__init__(self)

    @property  # type: ignore[override]
    def ssh_client(self) -> Any:  # the Host reconnects when its transport died
        return self._host.client

    @ssh_client.setter
    def ssh_client(self, _value: Any) -> None:
        pass

    def _connect(self) -> None:
        self._host.client  # noqa: B018 - reconnects if needed

    def close(self) -> None:
        self.pools.clear()  # the SSH connection belongs to the Host


def api_client(host: Host) -> docker.APIClient:
    # Build without contacting anything, then mount the adapter and agree on the API version
    # (docker-py's default may be newer than the daemon's, e.g. 20.10 speaks 1.41).
    api = docker.APIClient(base_url="tcp://127.0.0.1:9", version=MIN_API, timeout=600)
    adapter = _HostAdapter(host)
    api.mount("http+docker://ssh", adapter)
    api.base_url = "http+docker://ssh"
    api._custom_adapter = adapter
    try:
        server = api.version(api_version=False)["ApiVersion"]
    except Exception as e:  # noqa: BLE001
        raise DockerError(
            f"{host.name}: cannot reach the Docker daemon over SSH: {_explain(e)}",
            hint="is dockerd running there, and is `docker` on the SSH user's PATH?",
        ) from None
    ours = docker.constants.DEFAULT_DOCKER_API_VERSION
    api._version = server if _v(server) < _v(ours) else ours
    return api


def _v(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split("."))


def _explain(e: BaseException) -> str:
    if isinstance(e, docker.errors.APIError):
        return str(e.explanation or e)
    return str(e) or type(e).__name__


@contextlib.contextmanager
def daemon_errors(host: Host, what: str) -> Iterator[None]:
    """Turn docker-py errors into DockerError carrying the daemon's own explanation."""
    try:
        yield
    except docker.errors.APIError as e:
        raise DockerError(f"{host.name}: {what}: {_explain(e)}") from None
    except requests.exceptions.ConnectionError as e:
        raise DockerError(f"{host.name}: {what}: daemon unreachable: {e}") from None


class Engine:
    """The Docker operations migrator needs on one host."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @property
    def api(self) -> docker.APIClient:
        return self.host.docker

    def info(self) -> dict[str, Any]:
        with daemon_errors(self.host, "docker info"):
            return dict(self.api.info())

    def version(self) -> dict[str, Any]:
        with daemon_errors(self.host, "docker version"):
            return dict(self.api.version())

    def inspect(self, container: str) -> dict[str, Any] | None:
        try:
            return dict(self.api.inspect_container(container))
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as e:
            raise DockerError(f"{self.host.name}: inspect {container}: {_explain(e)}") from None

    def containers(self, all: bool = False) -> list[dict[str, Any]]:
        with daemon_errors(self.host, "list containers"):
            return list(self.api.containers(all=all))

    def image_exists(self, ref: str) -> bool:
        try:
            self.api.inspect_image(ref)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as e:
            raise DockerError(f"{self.host.name}: inspect image {ref}: {_explain(e)}") from None

    def image_inspect(self, ref: str) -> dict[str, Any]:
        with daemon_errors(self.host, f"inspect image {ref}"):
            return dict(self.api.inspect_image(ref))

    def remove_image(self, ref: str) -> None:
        try:
            self.api.remove_image(ref, noprune=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            raise DockerError(f"{self.host.name}: remove image {ref}: {_explain(e)}") from None

    def remove_container(self, container: str, force: bool = True) -> None:
        try:
            self.api.remove_container(container, force=force, v=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            raise DockerError(f"{self.host.name}: remove {container}: {_explain(e)}") from None

    def start(self, container: str, checkpoint: str | None = None) -> None:
        with daemon_errors(self.host, f"start {container}" + (f" from checkpoint {checkpoint}" if checkpoint else "")):
            params = {"checkpoint": checkpoint} if checkpoint else {}
            res = self.api._post(self.api._url("/containers/{0}/start", container), params=params)
            self.api._raise_for_status(res)

    def stop(self, container: str, timeout: int = 10) -> None:
        with daemon_errors(self.host, f"stop {container}"):
            self.api.stop(container, timeout=timeout)

    def checkpoint_create(self, container: str, name: str, *, exit: bool = True) -> None:
        with daemon_errors(self.host, f"checkpoint {container}"):
            res = self.api._post_json(
                self.api._url("/containers/{0}/checkpoints", container),
                data={"CheckpointID": name, "Exit": exit},
            )
            self.api._raise_for_status(res)

    def checkpoint_delete(self, container: str, name: str) -> None:
        try:
            res = self.api._delete(self.api._url("/containers/{0}/checkpoints/{1}", container, name))
            self.api._raise_for_status(res)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            raise DockerError(f"{self.host.name}: delete checkpoint {name}: {_explain(e)}") from None

    def commit(self, container: str, repository: str, tag: str, labels: dict[str, str]) -> str:
        with daemon_errors(self.host, f"commit {container}"):
            res = self.api.commit(container, repository=repository, tag=tag, conf={"Labels": labels},
                                  pause=False)
            return str(res["Id"])

    def create(self, name: str, body: dict[str, Any]) -> str:
        with daemon_errors(self.host, f"create {name}"):
            res = self.api._post_json(self.api._url("/containers/create"), data=body, params={"name": name})
            return str(self.api._result(res, True)["Id"])

    def volume_inspect(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.api.inspect_volume(name))
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as e:
            raise DockerError(f"{self.host.name}: inspect volume {name}: {_explain(e)}") from None

    def volume_create(self, name: str, driver: str, options: dict[str, str], labels: dict[str, str]) -> None:
        with daemon_errors(self.host, f"create volume {name}"):
            self.api.create_volume(name, driver=driver, driver_opts=options or None, labels=labels or None)

    def volume_remove(self, name: str) -> None:
        try:
            self.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            raise DockerError(f"{self.host.name}: remove volume {name}: {_explain(e)}") from None
