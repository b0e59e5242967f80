"""Docker's Engine API on a host, over the host's own SSH connection.

docker-py's SSH adapter reads keys and host keys only from ~/.ssh; here its HTTP runs over
the `Host`'s paramiko transport instead (`docker system dial-stdio` per connection), so the
inventory's key and known_hosts apply. Checkpoints do not go through the Engine API (dumps
use runc, restores `docker start --checkpoint` on the host: see checkpoint.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests
from docker.transport.sshconn import SSHHTTPAdapter
from urllib3._collections import RecentlyUsedContainer

from .errors import DaemonUnreachable, DockerError

if TYPE_CHECKING:
    from .transport import Host

MIN_API = "1.40"
_POOL_KEY = "http+docker://ssh"


class _HostAdapter(SSHHTTPAdapter):
    """SSHHTTPAdapter that uses an existing paramiko client instead of building its own."""

    def __init__(self, host: Host, timeout: int = 600) -> None:
        self._host = host
        self.ssh_host = host.spec.address
        self.timeout = timeout
        self.max_pool_size = 4
        self.pools: Any = RecentlyUsedContainer(4, dispose_func=lambda p: p.close())
        requests.adapters.HTTPAdapter.__init__(self)

    @property  # type: ignore[override]
    def ssh_client(self) -> Any:  # the Host reconnects when its transport died
        return self._host.client

    @ssh_client.setter
    def ssh_client(self, _value: Any) -> None:
        pass

    def _connect(self) -> None:
        self._host.client  # noqa: B018 - reconnects if needed

    def get_connection(self, url: Any, proxies: Any = None) -> Any:
        # A pool keeps the transport it was made with: after a reconnect, start afresh.
        transport = self._host.client.get_transport()
        if transport is not getattr(self, "_transport", None):
            self.pools.clear()
            self._transport = transport
        # One pool for every request to this daemon: docker-py keys its pools by the whole
        # URL, path included, so each endpoint asked started `docker system dial-stdio`
        # anew on the host (a Go process, ~20 ms of CPU; 19 of them per migration).
        return super().get_connection(_POOL_KEY, proxies)

    def close(self) -> None:
        self.pools.clear()  # the SSH connection belongs to the Host


def api_client(host: Host) -> docker.APIClient:
    # Build without contacting anything, then mount the adapter and agree on the API version
    # (docker-py's default may be newer than the daemon's, e.g. 20.10 speaks 1.41).
    host.client  # noqa: B018 - SSH errors (host key, auth, unreachable) surface as themselves
    api = docker.APIClient(base_url="tcp://127.0.0.1:9", version=MIN_API, timeout=600)
    adapter = _HostAdapter(host)
    # docker-py has no public way to give an APIClient another transport: these three lines
    # are what its own SSH client does with it (docker/api/client.py).
    api.mount("http+docker://ssh", adapter)
    api.base_url = "http+docker://ssh"
    api._custom_adapter = adapter
    try:
        server = api.version(api_version=False)["ApiVersion"]
    except Exception as ex:  # noqa: BLE001
        raise DaemonUnreachable(
            f"{host.name}: cannot reach the Docker daemon over SSH: {_explain(ex)}",
            hint="is dockerd running there, and is `docker` on the SSH user's PATH?",
        ) from None
    ours = docker.constants.DEFAULT_DOCKER_API_VERSION
    api._version = server if _v(server) < _v(ours) else ours
    return api


def _v(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split("."))


def _explain(error: BaseException) -> str:
    if isinstance(error, docker.errors.APIError):
        return str(error.explanation or error)
    return str(error) or type(error).__name__


_RAISE = object()


class Engine:
    """The Docker operations migrator needs on one host. Every daemon error becomes a
    DockerError carrying the daemon's own explanation; "not found" may be a value."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @property
    def api(self) -> docker.APIClient:
        return self.host.docker

    def _call(self, what: str, fn: Callable[[docker.APIClient], Any], missing: Any = _RAISE,
              idempotent: bool = True) -> Any:
        try:
            try:
                return fn(self.api)
            except (requests.exceptions.ConnectionError, OSError, EOFError):
                if not idempotent:
                    raise
                # The SSH connection may have died under us (sshd restarted): reconnect once.
                self.host.reset()
                return fn(self.api)
        except docker.errors.NotFound as ex:
            if missing is _RAISE:
                raise DockerError(f"{self.host.name}: {what}: {_explain(ex)}") from None
            return missing
        except docker.errors.APIError as ex:
            raise DockerError(f"{self.host.name}: {what}: {_explain(ex)}") from None
        except (requests.exceptions.RequestException, OSError, EOFError) as ex:
            raise DaemonUnreachable(f"{self.host.name}: {what}: Docker daemon unreachable ({ex})",
                                    hint=f"is dockerd running on {self.host.name}?") from None

    def info(self) -> dict[str, Any]:
        return dict(self._call("docker info", lambda a: a.info()))

    @property
    def docker_root(self) -> str:
        """The daemon's data root (asked once per Engine)."""
        if not getattr(self, "_root", None):
            self._root = str(self.info().get("DockerRootDir") or "/var/lib/docker")
        return self._root

    @property
    def server_version(self) -> str:
        """The daemon's version, e.g. "28.5.2+dfsg4" (asked once per Engine)."""
        if not getattr(self, "_server_version", None):
            self._server_version = str(self.version().get("Version") or "")
        return self._server_version

    def version(self) -> dict[str, Any]:
        return dict(self._call("docker version", lambda a: a.version()))

    def inspect(self, container: str) -> dict[str, Any] | None:
        return self._call(f"inspect {container}", lambda a: a.inspect_container(container), None)

    def containers(self, all: bool = False) -> list[dict[str, Any]]:
        return list(self._call("list containers", lambda a: a.containers(all=all)))

    def image_inspect(self, ref: str) -> dict[str, Any] | None:
        return self._call(f"inspect image {ref}", lambda a: a.inspect_image(ref), None)

    def image_exists(self, ref: str) -> bool:
        return self.image_inspect(ref) is not None

    def remove_image(self, ref: str) -> None:
        self._call(f"remove image {ref}", lambda a: a.remove_image(ref), None)

    def remove_container(self, container: str) -> None:
        self._call(f"remove {container}", lambda a: a.remove_container(container, force=True), None)

    def rename(self, container: str, name: str) -> None:
        self._call(f"rename {container} to {name}", lambda a: a.rename(container, name), idempotent=False)

    def update_restart_policy(self, container: str, policy: dict[str, Any]) -> None:
        self._call(f"update {container}", lambda a: a.update_container(container, restart_policy=policy))

    def stats(self, container: str) -> dict[str, Any]:
        return dict(self._call(f"stats {container}",
                               lambda a: a.stats(container, stream=False, one_shot=True)))

    def create(self, name: str, body: dict[str, Any]) -> str:
        return str(self._call(f"create {name}", lambda a: a.create_container_from_config(body, name)["Id"],
                              idempotent=False))

    def network_inspect(self, name: str) -> dict[str, Any] | None:
        return self._call(f"inspect network {name}", lambda a: a.inspect_network(name), None)

    def network_create(self, name: str, body: dict[str, Any]) -> None:
        """`body` as `networks.create_body` makes it (the Engine API's fields)."""
        self._call(f"create network {name}", lambda a: a._result(
            a._post_json(a._url("/networks/create"), data={"Name": name, **body}), True), idempotent=False)

    def network_remove(self, name: str) -> None:
        self._call(f"remove network {name}", lambda a: a.remove_network(name), None)

    def network_connect(self, name: str, container: str, endpoint: dict[str, Any]) -> None:
        self._call(f"connect {container} to {name}", lambda a: a._result(a._post_json(
            a._url("/networks/{0}/connect", name), data={"Container": container, "EndpointConfig": endpoint})))

    def users(self, kind: str, name: str) -> list[str]:
        """Names of the containers (any state) on `kind` ("network", "volume") `name`."""
        return [c["Names"][0].lstrip("/") for c in self._call(
            f"list containers of {kind} {name}", lambda a: a.containers(all=True, filters={kind: name}))]

    def volume_inspect(self, name: str) -> dict[str, Any] | None:
        return self._call(f"inspect volume {name}", lambda a: a.inspect_volume(name), None)

    def volume_create(self, name: str, options: dict[str, str], labels: dict[str, str]) -> None:
        self._call(f"create volume {name}", lambda a: a.create_volume(
            name, driver="local", driver_opts=options or None, labels=labels or None))

    def volume_remove(self, name: str) -> None:
        self._call(f"remove volume {name}", lambda a: a.remove_volume(name, force=True), None)
