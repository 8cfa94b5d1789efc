"""A Kubernetes API emulator on 127.0.0.1, built on kmock's ``KubernetesEmulator``.

The operator talks to Kubernetes through the official synchronous ``kubernetes`` client; in
tests it talks to this emulator over real HTTP. kmock 0.8 keeps objects in memory and
serves create/get/list/patch/delete/watch, but falls short of what the operator relies on
(see DESIGN.md "Facts"), so :class:`EmulatedKubernetes` answers every request for a
declared resource itself and keeps kmock's object store (``emulator.objects``), watch
buses and discovery. Emulated, for the resources in :data:`KINDS` (more with
:meth:`KubeAPI.declare`):

- **create** (POST): 201 with the stored object; ``metadata.namespace`` from the URL,
  ``uid``, ``creationTimestamp``, ``generation: 1`` and ``resourceVersion`` filled in;
  ``generateName`` honoured; an existing name answers 409 ``AlreadyExists``.
- **get / list**: 404 ``NotFound`` for a missing object; lists honour ``labelSelector``
  (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``, ``a notin (x,y)``, comma =
  AND) and ``fieldSelector`` (``path=value`` / ``path!=value`` on dotted paths such as
  ``metadata.name``), and carry the current ``metadata.resourceVersion``.
- **resourceVersion**: one counter for the whole store, like etcd's revision; every write
  bumps it and stamps the written object. A replace (PUT) or patch that carries a
  ``metadata.resourceVersion`` different from the stored one answers 409 ``Conflict``;
  without one, updates are unconditional (as for the built-in types).
- **replace** (PUT): the whole object, keeping ``uid``/``creationTimestamp``; a body whose
  name differs from the URL answers 400.
- **patch** (PATCH) by Content-Type: ``application/merge-patch+json`` (RFC 7386),
  ``application/json-patch+json`` (RFC 6902, a failed ``test`` op answers 422) and
  ``application/strategic-merge-patch+json`` *approximated*: merge patch, except that lists
  of objects are merged by their ``name`` key (containers, ports, env, volumes) or
  ``type`` key (conditions); no ``$patch``/``$retainKeys`` directives.
- ``metadata.generation`` is bumped when ``spec`` changes.
- **status subresource** (``.../status``, for kinds declaring it): get/patch/put change only
  ``status``; writes to the main resource keep the stored ``status``.
- **scale subresource** (``.../scale``, StatefulSets and Deployments): GET answers an
  ``autoscaling/v1`` Scale (``spec.replicas``, ``status.replicas``, ``status.selector`` as
  a label-selector string from ``spec.selector.matchLabels``); PATCH (any of the patch
  types above, applied to the Scale) and PUT change ``spec.replicas`` of the workload.
- **delete**: removes the object at once and answers 200 with its last state; the
  DeleteOptions ``preconditions`` (``uid``, ``resourceVersion``) answer 409 on a mismatch
  (no graceful deletion, no garbage collection of dependents). A PersistentVolumeClaim a
  pod still mounts is kept Terminating (``deletionTimestamp``, the
  ``kubernetes.io/pvc-protection`` finalizer) until no pod mounts it.
- **watch** (``?watch=true``): ADDED for the current objects (only those newer than a
  given ``resourceVersion``; no history replay), then ADDED/MODIFIED/DELETED as they
  happen, filtered by namespace and selectors (an update moving an object into or out of
  the selection arrives as ADDED or DELETED); ``timeoutSeconds`` ends the stream, and so
  does going offline.
- **Event TTL**: Events (core/v1 and events.k8s.io/v1) expire ``event_ttl`` seconds
  after their last write (:meth:`KubeAPI.set_event_ttl`; 1 h by default, as the API
  server's ``--event-ttl``): gone from get/list, a patch answers 404, watchers see DELETED.
- A request the client gave up on (timeout, closed socket) is still carried out.
- Discovery (``/apis/<group>/<version>`` lists the declared resources and subresources)
  and ``/version`` are kmock's. Not emulated: admission (no ValidatingAdmissionPolicy or
  webhooks), defaulting, validation against schemas, RBAC beyond one Role per token
  (no ClusterRoles, bindings or aggregation; discovery is never authorized), authentication
  (any token is accepted), server-side apply, API priority and fairness (429s come only
  from injected faults), ``dryRun`` (answers 400 rather than writing), pagination
  (``limit`` is ignored: everything comes in one page), Event series and aggregation
  (the recorder's job), the server's own clock skew, controllers (a StatefulSet creates
  no Pods: see ``tests/k8s/kubelet.py``; no garbage collector, no PVC retention policy),
  graceful deletion and finalizers beyond ``kubernetes.io/pvc-protection`` (a delete
  removes a pod or any other object at once; a claim a pod still mounts is the one
  exception, kept Terminating — ``deletionTimestamp`` and the finalizer — until no pod
  mounts it, as the protection controller does). The admission policy
  shipped in ``deploy/`` is evaluated with cel-python in ``tests/unit``, not here.

Fault injection (:class:`KubeAPI`): :meth:`KubeAPI.fail_next` makes the next N requests
matching a verb and/or path answer a given status (409, 429 with ``Retry-After``, 500, …)
as a ``Status`` body; :meth:`KubeAPI.hang_next` delays them before they are carried out,
:meth:`KubeAPI.answer_late` carries them out at once and delays only the answer (a slow
network or an overloaded apiserver: the write landed, the client hears late);
:meth:`KubeAPI.go_offline`
closes the listening socket and every open connection (clients get "connection refused")
until :meth:`KubeAPI.go_online` listens again on the same port. Every request is logged
with its answer (:meth:`KubeAPI.requests`).

Clients are told apart by their bearer token (``write_kubeconfig(token=...)``).
:meth:`KubeAPI.skew_clock` gives one client a wall clock off by N seconds: the times it
writes into Leases (``renewTime``, ``acquireTime``) and Events (``firstTimestamp``,
``lastTimestamp``, ``eventTime``) are shifted by N as the server stores them. That is all a
skewed clock changes on the wire; the client's own comparisons run on its own clocks, and
the operator judges time only with a monotonic clock, so no test knob in the product is
needed to run two replicas "10 s apart".

:meth:`KubeAPI.enforce_rbac` binds a token to a Role's ``rules`` (e.g. the Role the Helm
chart renders): that client's requests for declared resources are authorized as the API
server's RBAC authorizer would (group, resource and subresource, verb, ``resourceNames``)
and answered 403 ``Forbidden`` otherwise; other tokens are allowed everything.

:class:`KubeAPI` runs the emulator in a background thread with its own asyncio loop, for
the synchronous client (:meth:`KubeAPI.client`; :meth:`KubeAPI.write_kubeconfig` for another
process); :meth:`KubeAPI.create`/``get``/``list``/``patch``/``delete`` are an
in-process side door to the same store (same resourceVersions and watch events, no HTTP, no
faults): the kubelet fixture and test set-up use it, as a real kubelet has its own path to
the API server that a fault injected for the operator does not cut.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import kubernetes.client
from kmock._internal import rendering

from tests.k8s.api_rules import (
    KINDS,
    ApiError,
    Kind,
    Obj,
    apply_patch,
    merge_patch,
    now,
    rbac_allows,
    request_verb,
    selected,
    shift_times,
)

__all__ = [
    "EmulatedKubernetes",
    "Fault",
    "KubeAPI",
    "Kind",  # from api_rules: what KubeAPI.declare takes
    "SeenRequest",
]

T = TypeVar("T")
PVC_PROTECTION = "kubernetes.io/pvc-protection"


# --- the emulator (runs on its own loop) ------------------------------------------------


@dataclass
class Fault:
    """An injected answer: the next ``remaining`` matching requests get it."""

    status: int | None
    remaining: int
    verb: str | None = None
    path: str | re.Pattern[str] | None = None
    delay: float = 0.0
    retry_after: float | None = None
    hits: int = 0
    late: bool = False  # delay the answer, not the work
    token: str | None = None  # only this client's requests (by bearer token)

    def matches(self, verb: str, path: str, token: str = "") -> bool:
        if self.remaining <= 0 or (self.verb is not None and self.verb.upper() != verb):
            return False
        if self.token is not None and self.token != token:
            return False
        if isinstance(self.path, re.Pattern):
            return self.path.search(path) is not None
        return self.path is None or self.path in path


@dataclass(frozen=True)
class SeenRequest:
    """One request as the emulator saw it, with the status it answered."""

    verb: str
    path: str
    query: dict[str, str]
    status: int
    content_type: str = ""
    body: Any = None


@dataclass
class _Watch:
    resource: kmock.resource
    queue: asyncio.Queue[tuple[str, Obj, Obj | None]] = field(default_factory=asyncio.Queue)


class EmulatedKubernetes(kmock.KubernetesEmulator):
    """kmock's emulator with the API semantics listed in the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.kinds: dict[tuple[str, str, str], Kind] = {}
        self.revision = 0
        self.faults: list[Fault] = []
        self.faults_lock = threading.Lock()
        self.seen: list[SeenRequest] = []
        self.skews: dict[str, float] = {}  # bearer token -> seconds its clock is off
        self.roles: dict[str, list[Obj]] = {}  # bearer token -> the rules it is bound to
        self.event_ttl = 3600.0
        self._event_writes: dict[tuple[Any, str | None, str], float] = {}  # monotonic
        self.closing = asyncio.Event()
        self._watches: list[_Watch] = []
        self._inflight: set[asyncio.Future[aiohttp.web.StreamResponse]] = set()
        for kind in KINDS:
            self.declare(kind)

    def declare(self, kind: Kind) -> None:
        """Serve ``kind`` (also listed in discovery)."""
        self.kinds[(kind.group, kind.version, kind.plural)] = kind
        self.resources[kind.resource] = kmock.ResourceInfo(
            kind=kind.kind, namespaced=kind.namespaced, subresources=set(kind.subresources),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )  # fmt: skip

    # -- HTTP entry ------------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.action == kmock.action.WATCH:
            return await self._serve(request)
        # A client that gives up (timeout, closed socket) does not undo a request the
        # server already took: finish it even when aiohttp cancels this handler.
        task = asyncio.ensure_future(self._serve(request))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        response = await self._answer(request, str(request.method.value), request.url.path)
        if isinstance(response, aiohttp.web.Response):  # a watch stream is logged as it starts
            self._log(request, response.status)
        return response

    def _log(self, request: rendering.Request, status: int) -> None:
        self.seen.append(SeenRequest(
            str(request.method.value), request.url.path, dict(request.params), status,
            request.headers.get("Content-Type", ""), request.data,
        ))  # fmt: skip

    async def _answer(
        self, request: rendering.Request, verb: str, path: str
    ) -> aiohttp.web.StreamResponse:
        with self.faults_lock:
            token = self.token(request)
            fault = next((f for f in self.faults if f.matches(verb, path, token)), None)
            if fault is not None:
                fault.remaining -= 1
                fault.hits += 1
        if fault is not None and fault.late:
            response = await self._answer_now(request, verb, path)
            await asyncio.sleep(fault.delay)
            return response
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                retry = fault.retry_after
                headers = {"Retry-After": f"{retry:g}"} if retry else {}
                return ApiError(fault.status, "injected by the test").response(headers)
        return await self._answer_now(request, verb, path)

    @staticmethod
    def token(request: rendering.Request) -> str:
        """The client's bearer token ("" when it sent none)."""
        auth = request.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""

    async def _answer_now(
        self, request: rendering.Request, verb: str, path: str
    ) -> aiohttp.web.StreamResponse:
        skew = self.skews.get(self.token(request), 0.0)
        if skew and request.resource is not None and verb in ("POST", "PUT", "PATCH"):
            shifted = shift_times(request.resource.plural or "", request.data, skew)
            request = attrs.evolve(request, data=shifted)
        res = request.resource
        rules = self.roles.get(self.token(request))
        if rules is not None and res is not None and res.plural is not None:
            resource = res.plural + (f"/{request.subresource}" if request.subresource else "")
            action = request_verb(verb, request.name, request.params)
            if not rbac_allows(rules, res.group or "", resource, action, request.name):
                what = f"{action} {resource} {request.name or ''}".strip()
                return ApiError(
                    403, f"{what} is forbidden: not granted by the token's Role"
                ).response()
        if res is not None and res.group is not None and res.plural is None and verb == "GET":
            # kmock answers these with its LIST fallback, which shadows its own discovery.
            serve = self._serve_version if res.version else self._serve_group
            return aiohttp.web.json_response(await serve(request))
        if res is None or res.group is None or res.plural is None:
            return await super()._handle(request)  # /apis, /api, /version
        kind = self.kinds.get((res.group, res.version or "", res.plural))
        if kind is None:
            return ApiError(404, f"the server could not find the resource {res.plural}").response()
        if request.action == kmock.action.WATCH:
            return await super()._handle(request)
        try:
            async with self._lock:
                status, body = self._dispatch(kind, request, verb)
        except ApiError as exc:
            return exc.response()
        return aiohttp.web.json_response(body, status=status)

    def _dispatch(self, kind: Kind, request: rendering.Request, verb: str) -> tuple[int, Obj]:
        ns, name, sub = request.namespace, request.name, request.subresource
        if sub is not None and sub not in kind.subresources:
            raise ApiError(404, f"{kind.plural} has no subresource {sub!r}")
        if "dryRun" in request.params:
            raise ApiError(400, "dryRun is not emulated")
        if name is None:
            if verb == "GET":
                return 200, self.list_objects(kind, ns, request.params)
            if verb == "POST":
                return 201, self.create_object(kind, ns, request.data)
            raise ApiError(405, f"{verb} is not allowed on a collection")
        if verb == "GET":
            obj = self.get_object(kind, ns, name)
            return 200, self._scale_of(kind, obj) if sub == "scale" else obj
        if verb == "DELETE":
            wanted = ((request.data or {}).get("preconditions") or {}) if isinstance(
                request.data, dict) else {}  # fmt: skip
            current = self.get_object(kind, ns, name)
            for field_name, have in (("uid", current["metadata"].get("uid")),
                                     ("resourceVersion", self._version(current))):  # fmt: skip
                if wanted.get(field_name) not in (None, have):
                    raise ApiError(409, f"Precondition failed: {field_name} is {have}")
            return 200, self.delete_object(kind, ns, name)
        if verb not in ("PUT", "PATCH"):
            raise ApiError(405, f"{verb} is not allowed on an object")
        current = self.get_object(kind, ns, name)
        content_type = request.headers.get("Content-Type", "application/json")
        view = self._scale_of(kind, current) if sub == "scale" else current
        if verb == "PUT":
            if not isinstance(request.data, dict):
                raise ApiError(400, "the body of a PUT is an object")
            new = request.data
        else:
            new = apply_patch(copy.deepcopy(view), request.data, content_type)
        body_name = (new.get("metadata") or {}).get("name")
        if body_name is not None and body_name != name:
            raise ApiError(400, f"the name of the object ({body_name}) does not match the URL")
        self._check_version(view, new)
        if sub == "scale":
            replicas = (new.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(422, f"spec.replicas must be a non-negative integer: {replicas!r}")
            updated = merge_patch(current, {"spec": {"replicas": replicas}})
            return 200, self._scale_of(kind, self.write_object(kind, ns, name, updated))
        if sub == "status":
            updated = dict(current, status=new.get("status"))
        else:
            updated = self._keep_server_fields(kind, current, new)
        return 200, self.write_object(kind, ns, name, updated)

    # -- store operations (call with self._lock held, on the loop) -------------------

    def _key(self, kind: Kind, ns: str | None, name: str) -> tuple[Any, str | None, str]:
        return (kind.resource, ns if kind.namespaced else None, name)

    def _expire_events(self, kind: Kind) -> None:
        if kind.plural != "events":
            return
        now_mono = time.monotonic()
        for key, written in list(self._event_writes.items()):
            if key[0] == kind.resource and now_mono - written >= self.event_ttl:
                del self._event_writes[key]
                if key not in self._objects:  # an ObjectsArray: no .get()
                    continue
                live = self._objects[key]
                if not live.deleted:
                    last = self._bump(copy.deepcopy(live.raw))
                    live.delete()
                    self._publish(kind, "DELETED", last)

    def _written(self, kind: Kind, key: tuple[Any, str | None, str]) -> None:
        if kind.plural == "events":
            self._event_writes[key] = time.monotonic()

    def _live(self, kind: Kind, ns: str | None, name: str) -> Any:
        self._expire_events(kind)
        key = self._key(kind, ns, name)
        if key in self._objects and not self._objects[key].deleted:
            return self._objects[key]
        return None

    def _bump(self, obj: Obj) -> Obj:
        self.revision += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.revision)
        return obj

    def _publish(self, kind: Kind, event: str, obj: Obj, old: Obj | None = None) -> None:
        for watch in list(self._watches):
            if watch.resource == kind.resource:
                watch.queue.put_nowait((event, copy.deepcopy(obj), old))

    def get_object(self, kind: Kind, ns: str | None, name: str) -> Obj:
        live = self._live(kind, ns, name)
        if live is None:
            raise ApiError(404, f'{kind.plural} "{name}" not found')
        result: Obj = copy.deepcopy(live.raw)
        return result

    def list_objects(self, kind: Kind, ns: str | None, params: Any) -> Obj:
        labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")
        items = [obj for obj in self._current(kind, ns) if selected(obj, labels, fields)]
        return {
            "apiVersion": kind.api_version, "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(self.revision)}, "items": items,
        }  # fmt: skip

    def _current(self, kind: Kind, ns: str | None) -> list[Obj]:
        self._expire_events(kind)
        found = []
        for (resource, obj_ns, _), obj in self._objects.items():
            if resource == kind.resource and not obj.deleted and ns in (None, obj_ns):
                found.append(copy.deepcopy(obj.raw))
        return found

    def create_object(self, kind: Kind, ns: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of a create is an object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta["name"]
        if kind.namespaced:
            ns = ns or meta.get("namespace") or "default"
            meta["namespace"] = ns
        if self._live(kind, ns, name) is not None:
            raise ApiError(409, f'{kind.plural} "{name}" already exists', "AlreadyExists")
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        meta.update(uid=str(uuid.uuid4()), generation=1,
                    creationTimestamp=now())  # fmt: skip
        meta.pop("resourceVersion", None)
        self._bump(obj)
        key = self._key(kind, ns, name)
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj
        self._written(kind, key)
        self._publish(kind, "ADDED", obj)
        return copy.deepcopy(obj)

    def write_object(self, kind: Kind, ns: str | None, name: str, new: Obj) -> Obj:
        """Store a new version of an existing object (bumps resourceVersion, generation)."""
        live = self._live(kind, ns, name)
        if live is None:
            raise ApiError(404, f'{kind.plural} "{name}" not found')
        old = copy.deepcopy(live.raw)
        obj = copy.deepcopy(new)
        meta = obj.setdefault("metadata", {})
        generation = int((old.get("metadata") or {}).get("generation") or 1)
        meta["generation"] = generation + (1 if old.get("spec") != obj.get("spec") else 0)
        self._bump(obj)
        live.history.append(obj)
        self._written(kind, self._key(kind, ns, name))
        self._publish(kind, "MODIFIED", obj, old)
        return copy.deepcopy(obj)

    def delete_object(self, kind: Kind, ns: str | None, name: str) -> Obj:
        live = self._live(kind, ns, name)
        if live is None:
            raise ApiError(404, f'{kind.plural} "{name}" not found')
        if kind.plural == "persistentvolumeclaims" and name in self._mounted(ns):
            return self._protect(kind, ns, name, live.raw)
        last = self._bump(copy.deepcopy(live.raw))
        live.delete()
        self._publish(kind, "DELETED", last)
        if kind.plural == "pods":
            self._release_claims(ns)
        return last

    # -- kubernetes.io/pvc-protection: a mounted claim is Terminating, not gone ---------

    def _kind(self, plural: str) -> Kind:
        return next(k for k in KINDS if k.group == "" and k.plural == plural)

    def _mounted(self, ns: str | None) -> set[str]:
        """Claims the namespace's live pods mount."""
        names = set()
        for pod in self._current(self._kind("pods"), ns):
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                if claim:
                    names.add(claim)
        return names

    def _protect(self, kind: Kind, ns: str | None, name: str, raw: Obj) -> Obj:
        """A delete of a claim a pod still mounts: it gets a ``deletionTimestamp`` and the
        ``kubernetes.io/pvc-protection`` finalizer keeps it until no pod mounts it."""
        obj = copy.deepcopy(raw)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("deletionTimestamp", now())
        finalizers = meta.setdefault("finalizers", [])
        if PVC_PROTECTION not in finalizers:
            finalizers.append(PVC_PROTECTION)
        return self.write_object(kind, ns, name, obj)

    def _release_claims(self, ns: str | None) -> None:
        """The protection controller: a Terminating claim no pod mounts any more goes."""
        kind = self._kind("persistentvolumeclaims")
        mounted = self._mounted(ns)
        for claim in self._current(kind, ns):
            meta = claim.get("metadata") or {}
            if meta.get("deletionTimestamp") and meta.get("name") not in mounted:
                live = self._live(kind, meta.get("namespace"), meta["name"])
                if live is not None:
                    last = self._bump(copy.deepcopy(live.raw))
                    live.delete()
                    self._publish(kind, "DELETED", last)

    @staticmethod
    def _version(obj: Obj) -> str | None:
        version = (obj.get("metadata") or {}).get("resourceVersion")
        return None if version is None else str(version)

    def _check_version(self, current: Obj, new: Obj) -> None:
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        have = self._version(current)
        if wanted not in (None, "") and str(wanted) != have:
            raise ApiError(
                409,
                "Operation cannot be fulfilled: the object has been modified; please apply "
                f"your changes to the latest version and try again (have {have}, got {wanted})",
            )

    def _keep_server_fields(self, kind: Kind, current: Obj, new: Obj) -> Obj:
        obj = copy.deepcopy(new)
        meta = obj.setdefault("metadata", {})
        old_meta = current.get("metadata") or {}
        for key in ("uid", "creationTimestamp", "namespace", "name", "generation"):
            if key in old_meta:
                meta[key] = old_meta[key]
        obj.setdefault("apiVersion", kind.api_version)
        obj.setdefault("kind", kind.kind)
        if "status" in kind.subresources:
            obj.pop("status", None)
            if "status" in current:
                obj["status"] = copy.deepcopy(current["status"])
        return obj

    def _scale_of(self, kind: Kind, obj: Obj) -> Obj:
        meta = obj.get("metadata") or {}
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": int((obj.get("spec") or {}).get("replicas") or 0)},
            "status": {
                "replicas": int((obj.get("status") or {}).get("replicas") or 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            },
        }  # fmt: skip

    # -- watch -----------------------------------------------------------------------

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        self._log(request, 200)
        yield b""  # send the headers now: the client waits for them
        res = request.resource
        assert res is not None and res.group is not None and res.plural is not None
        kind = self.kinds[(res.group, res.version or "", res.plural)]
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")
        since = int(request.params.get("resourceVersion") or 0)
        timeout = float(request.params.get("timeoutSeconds") or 3600)
        deadline = time.monotonic() + timeout
        watch = _Watch(kind.resource)
        async with self._lock:
            self._watches.append(watch)
            existing = self._current(kind, request.namespace)
        try:
            for obj in existing:
                if int(obj["metadata"]["resourceVersion"]) > since and selected(
                    obj, labels, fields
                ):
                    yield {"type": "ADDED", "object": obj}
            while not self.closing.is_set() and (left := deadline - time.monotonic()) > 0:
                try:
                    kind_of_event, obj, old = await asyncio.wait_for(
                        watch.queue.get(), min(left, 0.2)
                    )
                except TimeoutError:
                    continue
                if request.namespace not in (None, obj.get("metadata", {}).get("namespace")):
                    continue
                # An update that moves an object into or out of the selection is an ADDED or
                # DELETED event for this watcher, as the API server's watch cache sends it.
                now_in = selected(obj, labels, fields)
                was_in = old is not None and selected(old, labels, fields)
                if kind_of_event == "MODIFIED" and now_in != was_in:
                    kind_of_event = "ADDED" if now_in else "DELETED"
                if now_in or was_in:
                    yield {"type": kind_of_event, "object": obj}
        finally:
            self._watches.remove(watch)


# --- the thread wrapper the synchronous client talks to ---------------------------------


class KubeAPI:
    """The emulator on 127.0.0.1 in a background thread: URL, clients, faults, side door."""

    def __init__(self, start_timeout: float = 10.0) -> None:
        self.emulator = EmulatedKubernetes()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._server: kmock.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._start_timeout = start_timeout
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KubeAPI:
        self._thread = threading.Thread(target=self._run, name="kube-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout) or self._error is not None:
            raise RuntimeError(f"the Kubernetes API emulator did not start: {self._error!r}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator:
            await self._listen()
            self._ready.set()
            await self._stop.wait()
            await self._close()

    async def _listen(self) -> None:
        server = kmock.Server(self.emulator, host="127.0.0.1", port=self.port or None)
        await server.__aenter__()
        self._server = server
        self.port = server.port

    async def _close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            self.emulator.closing.set()  # ends open watches, or aiohttp waits for them
            try:
                await server.__aexit__(None, None, None)
            finally:
                self.emulator.closing.clear()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        assert self._loop is not None, "the emulator is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def client(self, token: str = "", **settings: Any) -> kubernetes.client.ApiClient:
        """An official client pointed at the emulator (``settings`` set on its Configuration);
        ``token``: the bearer token it sends (:meth:`skew_clock`)."""
        config = kubernetes.client.Configuration(host=self.url)
        if token:
            config.api_key = {"authorization": f"Bearer {token}"}
        for name, value in settings.items():
            setattr(config, name, value)
        return kubernetes.client.ApiClient(config)

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", token: str = "emulator-accepts-anything"
    ) -> Path:
        """A kubeconfig for the emulator, for a controller run as a separate process;
        ``token`` tells this client apart (:meth:`skew_clock`)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "emulator", "context": {
                "cluster": "emulator", "user": "test", "namespace": namespace}}],
        }  # fmt: skip
        target = Path(path)
        target.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return target

    # -- faults ----------------------------------------------------------------------

    def fail_next(
        self, status: int, count: int = 1, *, verb: str | None = None,
        path: str | re.Pattern[str] | None = None, retry_after: float | None = None,
    ) -> Fault:  # fmt: skip
        """The next ``count`` requests matching ``verb``/``path`` answer ``status``.

        ``retry_after`` > 0 adds a ``Retry-After`` header (0 or None: none). With one, the
        urllib3 pool under the official client re-sends GET/PUT/DELETE answered 429 or 503
        by itself (up to 3 times by default) before the caller sees an error.
        """
        return self._add(Fault(status, count, verb, path, retry_after=retry_after))

    def hang_next(
        self, seconds: float, count: int = 1, *, verb: str | None = None,
        path: str | re.Pattern[str] | None = None, token: str | None = None,
    ) -> Fault:  # fmt: skip
        """The next ``count`` matching requests (of the client with bearer ``token``, if
        given) are carried out and answered only after ``seconds``."""
        return self._add(Fault(None, count, verb, path, delay=seconds, token=token))

    def answer_late(
        self, seconds: float, count: int = 1, *, verb: str | None = None,
        path: str | re.Pattern[str] | None = None,
    ) -> Fault:  # fmt: skip
        """The next ``count`` matching requests are carried out at once and answered only
        after ``seconds``."""
        return self._add(Fault(None, count, verb, path, delay=seconds, late=True))

    def enforce_rbac(self, token: str, rules: list[Obj]) -> None:
        """Authorize the client with bearer ``token`` by a Role's ``rules``."""
        self.emulator.roles[token] = copy.deepcopy(rules)

    def set_event_ttl(self, seconds: float) -> None:
        """Events expire ``seconds`` after their last write (the API server's --event-ttl)."""
        self.emulator.event_ttl = seconds

    def skew_clock(self, token: str, seconds: float) -> None:
        """The client with bearer ``token`` writes times ``seconds`` off (ahead if > 0)."""
        self.emulator.skews[token] = seconds

    def _add(self, fault: Fault) -> Fault:
        with self.emulator.faults_lock:
            self.emulator.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.emulator.faults_lock:
            self.emulator.faults.clear()

    def go_offline(self) -> None:
        """Close the listening socket and all connections: clients get refused."""
        self._call(self._close())

    def go_online(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    @property
    def online(self) -> bool:
        return self._server is not None

    def requests(self, verb: str | None = None, path: str | None = None) -> list[SeenRequest]:
        """Requests answered so far (oldest first), optionally by verb and path substring."""
        return [
            seen for seen in list(self.emulator.seen)
            if (verb is None or seen.verb == verb.upper()) and (path is None or path in seen.path)
        ]  # fmt: skip

    # -- side door to the store (no HTTP, no faults) ---------------------------------

    def kind(self, resource: str) -> Kind:
        """``"apps/v1/statefulsets"``, ``"v1/pods"`` → its :class:`Kind`."""
        *group, version, plural = resource.split("/")
        try:
            return self.emulator.kinds[("/".join(group), version, plural)]
        except KeyError:
            raise KeyError(f"resource {resource!r} is not declared") from None

    def declare(self, kind: Kind) -> None:
        self._call(self._locked(lambda: self.emulator.declare(kind)))

    async def _locked(self, action: Any) -> Any:
        async with self.emulator._lock:
            return action()

    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        kind = self.kind(resource)

        def read() -> Obj | None:
            try:
                return self.emulator.get_object(kind, namespace, name)
            except ApiError:
                return None

        result: Obj | None = self._call(self._locked(read))
        return result

    def list(
        self, resource: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[Obj]:
        kind = self.kind(resource)
        params = {"labelSelector": label_selector}
        result = self._call(
            self._locked(lambda: self.emulator.list_objects(kind, namespace, params))
        )
        return list(result["items"])

    def create(self, resource: str, obj: Obj) -> Obj:
        kind = self.kind(resource)
        ns = (obj.get("metadata") or {}).get("namespace")
        result: Obj = self._call(self._locked(lambda: self.emulator.create_object(kind, ns, obj)))
        return result

    def patch(self, resource: str, namespace: str | None, name: str, patch: Obj) -> Obj:
        """A merge patch of the whole object, status included (a kubelet writes status)."""
        kind = self.kind(resource)

        def write() -> Obj:
            current = self.emulator.get_object(kind, namespace, name)
            return self.emulator.write_object(kind, namespace, name, merge_patch(current, patch))

        result: Obj = self._call(self._locked(write))
        return result

    def delete(self, resource: str, namespace: str | None, name: str) -> bool:
        """Delete if present; whether it was."""
        kind = self.kind(resource)

        def remove() -> bool:
            try:
                self.emulator.delete_object(kind, namespace, name)
            except ApiError:
                return False
            return True

        result: bool = self._call(self._locked(remove))
        return result

    def iter_kinds(self) -> Iterator[Kind]:
        yield from list(self.emulator.kinds.values())
