"""Pod -> JobSpec: Kubernetes semantics resolved once, as pure functions.

Every check that can refuse a pod happens here, before anything touches the
site: a refused pod raises `PodRejected` with the field and a reason the user
can act on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TypeVar

from . import annotations as an
from .expansion import expand
from .gang import RENDEZVOUS_ENV, gang_of
from .hostname import pod_hostname
from .jobspec import (
    ContainerSpec,
    FileItem,
    Handler,
    JobSpec,
    MountSpec,
    ProbeSpec,
    Resources,
    RestartPolicy,
    VolumeSpec,
)
from .k8s import (
    ConfigMap,
    Container,
    EnvFromSource,
    EnvVar,
    KeyToPath,
    LifecycleHandler,
    NameRef,
    Pod,
    Probe,
    Quantity,
    ResourceFieldRef,
    Secret,
    Volume,
    VolumeMount,
)
from .policy import TranslationPolicy
from .quantity import QuantityError, count, cpu_millis, memory_bytes
from .staging import VOLUME_PREFIX, StagingSpec, parse_staging
from .validate import (
    PodRejected,
    config_key,
    dns_label,
    dns_subdomain,
    env_name,
    mount_path,
    no_nul,
    pod_uid,
    relative_path,
)
from .wire import RetrievedPodData

K = TypeVar("K", ConfigMap, Secret)

GPU_RESOURCES = {"nvidia.com/gpu": "nvidia", "amd.com/gpu": "amd"}
CONFIGMAP_DEFAULT_MODE = 0o644
SENSITIVE_DEFAULT_MODE = 0o600


def pod_to_jobspec(data: RetrievedPodData, policy: TranslationPolicy) -> JobSpec:
    """Translate one interLink create request into a JobSpec, or raise PodRejected."""
    pod = data.pod
    meta = pod.metadata
    uid = pod_uid(meta.uid)
    if not meta.name:
        raise PodRejected("the pod has no name", field="metadata.name")
    dns_subdomain(meta.name, "metadata.name")
    namespace = dns_label(meta.namespace or "default", "metadata.namespace")
    hostname = pod_hostname(meta.name, dns_label(pod.spec.hostname, "spec.hostname") if pod.spec.hostname else "")
    if not pod.spec.containers:
        raise PodRejected("the pod has no containers", field="spec.containers")
    _unique_names(pod)

    warnings: list[str] = []
    volumes = _volumes(data, policy, warnings)
    volume_names = {v.name for v in volumes}
    pod_env = _pod_level_env(hostname)
    pod_policy = pod.spec.restart_policy or "Always"

    init_containers = tuple(
        _container(c, i, pod, data, volume_names, pod_env, pod_policy, is_init=True)
        for i, c in enumerate(pod.spec.init_containers)
    )
    containers = tuple(
        _container(c, i, pod, data, volume_names, pod_env, pod_policy, is_init=False)
        for i, c in enumerate(pod.spec.containers)
    )
    gang = gang_of(meta.annotations, meta.labels)
    if gang is not None:
        init_containers, containers = (_site_rendezvous(c, warnings) for c in (init_containers, containers))
    staging = parse_staging(meta.annotations)
    volumes, init_containers, containers = _with_staging(staging, volumes, init_containers, containers)
    resources, flavor = _resources(pod, policy)
    return JobSpec(
        uid=uid,
        name=meta.name,
        namespace=namespace,
        hostname=hostname,
        init_containers=init_containers,
        containers=containers,
        volumes=volumes,
        resources=resources,
        flavor=flavor,
        restart_policy=pod_policy,
        grace_seconds=grace_seconds(pod, policy),
        deadline_seconds=pod.spec.active_deadline_seconds,
        pod_options=an.pod_options(meta.annotations),
        warnings=tuple(warnings),
        staging=staging,
        gang=gang,
    )


def _site_rendezvous(containers: tuple[ContainerSpec, ...], warnings: list[str]) -> tuple[ContainerSpec, ...]:
    """A gang member's own rendezvous variables left out, so the site's apply: the PyTorch training
    operator points MASTER_ADDR at a Kubernetes Service, which the site cannot reach."""
    kept = []
    for c in containers:
        env = tuple((name, value) for name, value in c.env if name not in RENDEZVOUS_ENV)
        replaced = sorted({name for name, _ in c.env} - {name for name, _ in env})
        if replaced:
            warnings.append(f"container {c.name}: the site's gang rendezvous replaces {', '.join(replaced)}")
        kept.append(dataclasses.replace(c, env=env))
    return tuple(kept)


def _with_staging(
    staging: StagingSpec,
    volumes: tuple[VolumeSpec, ...],
    init_containers: tuple[ContainerSpec, ...],
    containers: tuple[ContainerSpec, ...],
) -> tuple[tuple[VolumeSpec, ...], tuple[ContainerSpec, ...], tuple[ContainerSpec, ...]]:
    """Staged inputs (read-only) and outputs (writable) mounted in every container."""
    if not staging:
        return volumes, init_containers, containers
    extra_volumes: list[VolumeSpec] = []
    extra_mounts: list[MountSpec] = []
    for index, item in enumerate(staging.inputs):
        extra_volumes.append(VolumeSpec(name=StagingSpec.input_volume(index), kind="emptyDir"))
        extra_mounts.append(
            MountSpec(StagingSpec.input_volume(index), mount_path(item.mount, "staging"), read_only=True)
        )
    for index, output in enumerate(staging.outputs):
        extra_volumes.append(VolumeSpec(name=StagingSpec.output_volume(index), kind="emptyDir"))
        extra_mounts.append(MountSpec(StagingSpec.output_volume(index), mount_path(output.mount, "staging")))

    def add(container: ContainerSpec) -> ContainerSpec:
        taken = {m.container_path for m in container.mounts}
        clash = [m.container_path for m in extra_mounts if m.container_path in taken]
        if clash:
            raise PodRejected(
                f"container {container.name!r} already mounts {clash[0]}, where staged data goes",
                field="metadata.annotations",
            )
        return dataclasses.replace(container, mounts=(*container.mounts, *extra_mounts))

    return (
        (*volumes, *extra_volumes),
        tuple(add(c) for c in init_containers),
        tuple(add(c) for c in containers),
    )


# --------------------------------------------------------------------------- containers


def _unique_names(pod: Pod) -> None:
    seen: set[str] = set()
    for index, container in enumerate(pod.all_containers()):
        field = f"spec.containers[{index}].name"
        dns_label(container.name, field)
        if container.name in seen:
            raise PodRejected(f"container name {container.name!r} is used twice", field=field)
        seen.add(container.name)
    seen.clear()
    for index, volume in enumerate(pod.spec.volumes):
        field = f"spec.volumes[{index}].name"
        dns_label(volume.name, field)
        if volume.name.startswith(VOLUME_PREFIX):
            raise PodRejected(f"volume names starting with {VOLUME_PREFIX!r} are reserved for staged data", field=field)
        if volume.name in seen:
            raise PodRejected(f"volume name {volume.name!r} is used twice", field=field)
        seen.add(volume.name)


def _pod_level_env(hostname: str) -> list[tuple[str, str]]:
    """Variables every container gets, as a kubelet sets them (HOSTNAME: the sandbox's hostname)."""
    return [("HOSTNAME", hostname)]


def container_restart_policy(pod_policy: RestartPolicy, is_init: bool) -> RestartPolicy:
    """How a container is restarted under the pod's restartPolicy: init containers are retried
    on failure unless the pod says Never (Kubernetes' rule); the others follow the pod."""
    if is_init:
        return "Never" if pod_policy == "Never" else "OnFailure"
    return pod_policy


def _container(
    container: Container,
    index: int,
    pod: Pod,
    data: RetrievedPodData,
    volume_names: set[str],
    pod_env: list[tuple[str, str]],
    pod_policy: RestartPolicy,
    *,
    is_init: bool,
) -> ContainerSpec:
    where = f"spec.{'initContainers' if is_init else 'containers'}[{index}]"
    if is_init and container.restart_policy == "Always":
        raise PodRejected(
            "restartable init containers (sidecar containers) are not supported",
            field=f"{where}.restartPolicy",
        )
    env = _env(container, where, pod, data, pod_env)
    variables = dict(env)
    command = tuple(no_nul(expand(arg, variables), f"{where}.command") for arg in container.command)
    args = tuple(no_nul(expand(arg, variables), f"{where}.args") for arg in container.args)
    mounts = tuple(
        _mount(m, f"{where}.volumeMounts[{i}]", volume_names, variables) for i, m in enumerate(container.volume_mounts)
    )
    _distinct_mount_paths(mounts, where)
    restart = container_restart_policy(pod_policy, is_init)
    lifecycle = container.lifecycle
    return ContainerSpec(
        name=container.name,
        image=container.image,
        command=command,
        args=args,
        env=tuple(env),
        working_dir=_working_dir(container.working_dir, where),
        mounts=mounts,
        is_init=is_init,
        restart_policy=restart,
        post_start=_handler(lifecycle.post_start, container, f"{where}.lifecycle.postStart") if lifecycle else None,
        pre_stop=_handler(lifecycle.pre_stop, container, f"{where}.lifecycle.preStop") if lifecycle else None,
        startup_probe=None if is_init else _probe(container.startup_probe, container, where),
        liveness_probe=None if is_init else _probe(container.liveness_probe, container, where),
        readiness_probe=None if is_init else _probe(container.readiness_probe, container, where),
        gpus=_container_gpus(container, where),
        pull_policy=_pull_policy(container.image_pull_policy, f"{where}.imagePullPolicy"),
    )


def grace_seconds(pod: Pod, policy: TranslationPolicy) -> int:
    """terminationGracePeriodSeconds (0 is a valid answer), else the site's default, at most its maximum."""
    grace = pod.spec.termination_grace_period_seconds
    grace = policy.default_grace_seconds if grace is None else grace
    return min(grace, policy.max_grace_seconds)


PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def _pull_policy(value: str, where: str) -> str:
    if value and value not in PULL_POLICIES:
        raise PodRejected(f"imagePullPolicy {value!r} is not one of {', '.join(PULL_POLICIES)}", field=where)
    return value


def _working_dir(value: str, where: str) -> str:
    if not value:
        return ""
    return mount_path(value, f"{where}.workingDir") if value != "/" else "/"


def _distinct_mount_paths(mounts: tuple[MountSpec, ...], where: str) -> None:
    seen: set[str] = set()
    for mount in mounts:
        if mount.container_path in seen:
            raise PodRejected(f"two volumes are mounted at {mount.container_path}", field=f"{where}.volumeMounts")
        seen.add(mount.container_path)


def _mount(mount: VolumeMount, where: str, volume_names: set[str], variables: Mapping[str, str]) -> MountSpec:
    if mount.name not in volume_names:
        raise PodRejected(f"volume {mount.name!r} is not defined in spec.volumes", field=where)
    sub_path = mount.sub_path
    if mount.sub_path_expr:
        if sub_path:
            raise PodRejected("subPath and subPathExpr are mutually exclusive", field=where)
        sub_path = expand(mount.sub_path_expr, variables)
    if sub_path:
        sub_path = relative_path(sub_path, f"{where}.subPath")
    return MountSpec(
        volume=mount.name,
        container_path=mount_path(mount.mount_path, f"{where}.mountPath"),
        sub_path=sub_path,
        read_only=mount.read_only,
    )


# --------------------------------------------------------------------------- environment


def _env(
    container: Container,
    where: str,
    pod: Pod,
    data: RetrievedPodData,
    pod_env: list[tuple[str, str]],
) -> list[tuple[str, str]]:
    """The container's environment in Kubernetes order: envFrom, then env (later wins),
    values expanded against the variables defined before them."""
    ordered: dict[str, str] = dict(pod_env)
    for index, source in enumerate(container.env_from):
        for name, value in _env_from(source, f"{where}.envFrom[{index}]", data).items():
            ordered[env_name(name, f"{where}.envFrom[{index}]")] = value
    for index, var in enumerate(container.env):
        field = f"{where}.env[{index}]"
        env_name(var.name, f"{field}.name")
        value = _env_value(var, field, pod, container, data)
        ordered[var.name] = no_nul(expand(value, ordered), f"{field}.value")
    return list(ordered.items())


def _env_from(source: EnvFromSource, where: str, data: RetrievedPodData) -> dict[str, str]:
    """envFrom is normally resolved by the Virtual Kubelet; resolve what it left."""
    if source.config_map_ref is not None:
        return _prefixed_items(
            source.prefix, source.config_map_ref, data.config_maps(), "ConfigMap", lambda cm: cm.items_bytes(), where
        )
    if source.secret_ref is not None:
        return _prefixed_items(
            source.prefix,
            source.secret_ref,
            data.secrets(),
            "Secret",
            lambda secret: _secret_items(secret, where),
            where,
        )
    return {}


def _prefixed_items(
    prefix: str,
    ref: NameRef,
    objects: Mapping[str, K],
    kind: str,
    items: Callable[[K], dict[str, bytes]],
    where: str,
) -> dict[str, str]:
    found = objects.get(ref.name)
    if found is None:
        if ref.optional:
            return {}
        raise PodRejected(f"{kind} {ref.name!r} was not sent with the pod", field=where)
    return {prefix + key: value.decode("utf-8", "replace") for key, value in items(found).items()}


def _env_value(var: EnvVar, where: str, pod: Pod, container: Container, data: RetrievedPodData) -> str:
    source = var.value_from
    if source is None:
        return var.value
    if source.field_ref is not None:
        value = _field_ref(pod, source.field_ref.field_path)
        if value is None:
            raise PodRejected(f"fieldRef {source.field_ref.field_path!r} is not supported", field=where)
        return value
    if source.config_map_key_ref is not None:
        ref = source.config_map_key_ref
        cm = data.config_maps().get(ref.name)
        items = cm.items_bytes() if cm else None
        return _key_ref(items, ref.name, ref.key, bool(ref.optional), "ConfigMap", where)
    if source.secret_key_ref is not None:
        ref = source.secret_key_ref
        secret = data.secrets().get(ref.name)
        items = _secret_items(secret, where) if secret else None
        return _key_ref(items, ref.name, ref.key, bool(ref.optional), "Secret", where)
    if source.resource_field_ref is not None:
        return _resource_field(pod, container, source.resource_field_ref, where)
    raise PodRejected("valueFrom names no source", field=where)


def _key_ref(items: Mapping[str, bytes] | None, name: str, key: str, optional: bool, kind: str, where: str) -> str:
    if items is None or key not in items:
        if optional:
            return ""
        raise PodRejected(
            f"{kind} {name!r} key {key!r} was not resolved by the Virtual Kubelet and was not sent with the pod",
            field=where,
        )
    return items[key].decode("utf-8", "replace")


def _field_ref(pod: Pod, path: str) -> str | None:
    meta = pod.metadata
    simple = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": pod.status.pod_ip,
        "status.hostIP": pod.status.host_ip,
    }
    if path in simple:
        return simple[path]
    for prefix, mapping in (("metadata.labels", meta.labels), ("metadata.annotations", meta.annotations)):
        if path == prefix:
            return "".join(f'{k}="{v}"\n' for k, v in sorted(mapping.items()))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return mapping.get(path[len(prefix) + 2 : -2], "")
    return None


def _resource_field(pod: Pod, container: Container, ref: ResourceFieldRef, where: str) -> str:
    target = container
    if ref.container_name:
        matches = [c for c in pod.all_containers() if c.name == ref.container_name]
        if not matches:
            raise PodRejected(f"container {ref.container_name!r} not found", field=where)
        target = matches[0]
    scope, _, resource = ref.resource.partition(".")
    values = {"limits": target.resources.limits, "requests": target.resources.requests}.get(scope)
    if values is None or not resource:
        raise PodRejected(f"resourceFieldRef {ref.resource!r} is not supported", field=where)
    value = values.get(resource)
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- handlers, probes


def _resolve_port(port: int | str, container: Container, where: str) -> int:
    if isinstance(port, int):
        number = port
    elif port.isdigit():
        number = int(port)
    else:
        named = [p.container_port for p in container.ports if p.name == port]
        if not named:
            raise PodRejected(f"named port {port!r} is not declared by the container", field=where)
        number = named[0]
    if not 0 < number < 65536:
        raise PodRejected(f"port {number} is out of range", field=where)
    return number


def _handler(h: LifecycleHandler | None, container: Container, where: str) -> Handler | None:
    if h is None:
        return None
    if h.exec is not None:
        if not h.exec.command:
            raise PodRejected("exec handler has an empty command", field=f"{where}.exec")
        return Handler(kind="exec", command=tuple(no_nul(a, where) for a in h.exec.command))
    if h.http_get is not None:
        get = h.http_get
        path = get.path if get.path.startswith("/") else "/" + get.path
        if any(ch in path for ch in "\r\n ") or any(
            ch in f"{x.name}{x.value}" for x in get.http_headers for ch in "\r\n"
        ):
            raise PodRejected("httpGet path and headers must not contain spaces or newlines", field=where)
        return Handler(
            kind="http",
            scheme=get.scheme,
            host=get.host or "127.0.0.1",
            port=_resolve_port(get.port, container, f"{where}.httpGet.port"),
            path=path,
            headers=tuple((x.name, x.value) for x in get.http_headers),
        )
    if h.tcp_socket is not None:
        return Handler(
            kind="tcp",
            host=h.tcp_socket.host or "127.0.0.1",
            port=_resolve_port(h.tcp_socket.port, container, f"{where}.tcpSocket.port"),
        )
    if h.sleep is not None:
        return Handler(kind="sleep", seconds=max(0, h.sleep.seconds))
    raise PodRejected("handler names no action (exec, httpGet, tcpSocket or sleep)", field=where)


def _probe(probe: Probe | None, container: Container, where: str) -> ProbeSpec | None:
    if probe is None:
        return None
    handler = _handler(probe, container, f"{where}.probe")
    assert handler is not None
    return ProbeSpec(
        handler=handler,
        initial_delay=probe.initial_delay_seconds,
        period=probe.period_seconds,
        timeout=probe.timeout_seconds,
        failure_threshold=probe.failure_threshold,
        success_threshold=probe.success_threshold,
    )


# --------------------------------------------------------------------------- volumes


def _volumes(data: RetrievedPodData, policy: TranslationPolicy, warnings: list[str]) -> tuple[VolumeSpec, ...]:
    pod = data.pod
    mounted = {m.name for c in pod.all_containers() for m in c.volume_mounts}
    out: list[VolumeSpec] = []
    total_bytes = 0
    for index, volume in enumerate(pod.spec.volumes):
        where = f"spec.volumes[{index}]"
        spec = _volume(volume, where, data, policy, warnings, mounted=volume.name in mounted)
        if spec is None:
            continue
        total_bytes += sum(len(f.content) for f in spec.files)
        if total_bytes > policy.max_volume_bytes:
            raise PodRejected(
                f"configMap/secret/projected files exceed the site limit of {policy.max_volume_bytes} bytes",
                field=where,
            )
        out.append(spec)
    return tuple(out)


def _volume(
    volume: Volume,
    where: str,
    data: RetrievedPodData,
    policy: TranslationPolicy,
    warnings: list[str],
    *,
    mounted: bool,
) -> VolumeSpec | None:
    kind = volume.kind()
    if kind == "emptyDir":
        return VolumeSpec(name=volume.name, kind="emptyDir")
    if kind == "configMap":
        source = volume.config_map
        assert source is not None
        cm = data.config_maps().get(source.name)
        if cm is None:
            if source.optional or not mounted:
                return VolumeSpec(name=volume.name, kind="configMap")
            raise PodRejected(f"ConfigMap {source.name!r} was not sent with the pod", field=where)
        mode = source.default_mode if source.default_mode is not None else CONFIGMAP_DEFAULT_MODE
        files = _key_files(cm.items_bytes(), source.items, mode, where, sensitive=False)
        return VolumeSpec(name=volume.name, kind="configMap", files=files)
    if kind == "secret":
        secret_source = volume.secret
        assert secret_source is not None
        secret = data.secrets().get(secret_source.secret_name)
        if secret is None:
            if secret_source.optional or not mounted:
                return VolumeSpec(name=volume.name, kind="secret", sensitive=True)
            raise PodRejected(f"Secret {secret_source.secret_name!r} was not sent with the pod", field=where)
        secret_mode = secret_source.default_mode
        files = _key_files(
            _secret_items(secret, where),
            secret_source.items,
            SENSITIVE_DEFAULT_MODE if secret_mode is None else secret_mode,
            where,
            sensitive=True,
        )
        return VolumeSpec(name=volume.name, kind="secret", files=files, sensitive=True)
    if kind in ("projected", "downwardAPI"):
        projected = data.projected_maps().get(volume.name)
        if projected is None:
            if mounted:
                warnings.append(
                    f"volume {volume.name!r}: the Virtual Kubelet sent no content for this "
                    "projected volume; it is mounted empty"
                )
            return VolumeSpec(name=volume.name, kind="projected", sensitive=True)
        items = {
            relative_path(key, f"{where}.projected[{key!r}]"): value for key, value in projected.items_bytes().items()
        }
        files = tuple(
            FileItem(path=path, content=content, mode=SENSITIVE_DEFAULT_MODE) for path, content in sorted(items.items())
        )
        return VolumeSpec(name=volume.name, kind="projected", files=files, sensitive=True)
    if kind == "hostPath":
        assert volume.host_path is not None
        return VolumeSpec(
            name=volume.name,
            kind="hostPath",
            host_path=_host_path(volume.host_path.path, volume.host_path.type, where, policy),
        )
    if not mounted:
        return None
    raise PodRejected(f"volume type {kind!r} is not supported on this site", field=where)


def _host_path(path: str, path_type: str, where: str, policy: TranslationPolicy) -> str:
    normalised = mount_path(path, f"{where}.hostPath.path")
    if path_type not in ("", "Directory", "DirectoryOrCreate"):
        raise PodRejected(
            f"hostPath type {path_type!r} is not supported (Directory or DirectoryOrCreate)",
            field=f"{where}.hostPath.type",
        )
    allowed = any(
        normalised == prefix.rstrip("/") or normalised.startswith(prefix.rstrip("/") + "/")
        for prefix in policy.host_path_allow
    )
    if not allowed:
        raise PodRejected(
            f"hostPath {normalised!r} is outside the directories this site allows",
            field=f"{where}.hostPath.path",
        )
    return normalised


def _secret_items(secret: Secret, where: str) -> dict[str, bytes]:
    try:
        return secret.items_bytes()
    except ValueError as exc:
        raise PodRejected(str(exc), field=where) from exc


def _key_files(
    items: dict[str, bytes],
    selected: list[KeyToPath],
    default_mode: int,
    where: str,
    *,
    sensitive: bool,
) -> tuple[FileItem, ...]:
    """Files for a configMap/secret volume: every key, or only `items` with their paths."""

    def clamp(mode: int) -> int:
        mode &= 0o777
        return mode & 0o700 if sensitive else mode

    if not selected:
        return tuple(
            FileItem(path=config_key(key, f"{where}.keys"), content=value, mode=clamp(default_mode))
            for key, value in sorted(items.items())
        )
    files = []
    for index, item in enumerate(selected):
        if item.key not in items:
            raise PodRejected(f"key {item.key!r} does not exist", field=f"{where}.items[{index}]")
        files.append(
            FileItem(
                path=relative_path(item.path, f"{where}.items[{index}].path"),
                content=items[item.key],
                mode=clamp(item.mode if item.mode is not None else default_mode),
            )
        )
    return tuple(files)


# --------------------------------------------------------------------------- resources


def _container_request(container: Container, name: str, parse: Callable[[Quantity], int], where: str) -> int:
    value = container.resources.limits.get(name, container.resources.requests.get(name))
    if value is None:
        return 0
    try:
        return parse(value)
    except QuantityError as exc:
        raise PodRejected(str(exc), field=f"{where}.resources") from exc


def _container_gpus(container: Container, where: str) -> int:
    return sum(_container_request(container, r, count, where) for r in GPU_RESOURCES)


def _pod_total(pod: Pod, name: str, parse: Callable[[Quantity], int]) -> int:
    """max(largest init container, sum of app containers): init containers run alone."""
    init = [
        _container_request(c, name, parse, f"spec.initContainers[{i}]") for i, c in enumerate(pod.spec.init_containers)
    ]
    apps = [_container_request(c, name, parse, f"spec.containers[{i}]") for i, c in enumerate(pod.spec.containers)]
    return max(max(init, default=0), sum(apps))


def _resources(pod: Pod, policy: TranslationPolicy) -> tuple[Resources, str]:
    vendors = {
        vendor
        for c in pod.all_containers()
        for resource, vendor in GPU_RESOURCES.items()
        if resource in c.resources.limits or resource in c.resources.requests
    }
    if len(vendors) > 1:
        raise PodRejected("a pod cannot mix NVIDIA and AMD GPUs", field="spec.containers")
    gpus = sum(_pod_total(pod, resource, count) for resource in GPU_RESOURCES)
    flavor_name = _flavor(pod, policy, gpus)
    flavor = policy.flavors[flavor_name]
    millis = _pod_total(pod, "cpu", cpu_millis)
    mem = _pod_total(pod, "memory", memory_bytes)
    cpus = -(-millis // 1000) if millis else flavor.cpu_default
    memory_mib = -(-mem // (1024 * 1024)) if mem else -(-memory_bytes(flavor.memory_default) // (1024 * 1024))
    return (
        Resources(
            cpus=max(1, cpus),
            memory_mib=max(1, memory_mib),
            gpus=gpus,
            gpu_vendor=next(iter(vendors)) if gpus else "",  # type: ignore[arg-type]
            cpus_from_pod=bool(millis),
            memory_from_pod=bool(mem),
        ),
        flavor_name,
    )


def _flavor(pod: Pod, policy: TranslationPolicy, gpus: int) -> str:
    annotations = pod.metadata.annotations
    for key in an.FLAVORS:
        if key in annotations:
            name = annotations[key]
            if name not in policy.flavors:
                raise PodRejected(
                    f"flavor {name!r} does not exist here; choose one of {sorted(policy.flavors)}",
                    field=an.field(key),
                )
            return name
    if gpus:
        if policy.gpu_flavor:
            return policy.gpu_flavor
        for name, flavor in policy.flavors.items():
            if flavor.gpus >= gpus:
                return name
    return policy.default_flavor
