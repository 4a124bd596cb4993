"""One table of refusals (interlink_provider.refusals): every error class the APIs can raise has a
row, and the site's REST and gRPC APIs and the gateway answer each the same way, over real
(in-process) aiohttp and gRPC servers."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import json
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import interlink_provider
import sidecars
from interlink_provider import refusals
from interlink_provider.auth import errors as auth_errors
from interlink_provider.gateway import identities, routing
from interlink_provider.gateway import server as gateway_server
from interlink_provider.pods.validate import PodRejected
from interlink_provider.pods.wire import RetrievedPodData
from interlink_provider.refusals import OUTCOMES, Refusal, answer, kind_of
from sidecars.core.adapters import grpc_api, rest
from sidecars.core.domain import errors as domain_errors
from sidecars.core.kits.transport import TransportError

ROOT = Path(__file__).resolve().parents[2]


def _every_module() -> None:
    for package in (interlink_provider, sidecars):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


_every_module()
REFUSALS = sorted(set(_subclasses(Refusal)), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _foreign() -> dict[str, Callable[[], BaseException]]:
    """The errors of other libraries a request body can raise, each made afresh."""

    def caught(action: Callable[[], object]) -> Callable[[], BaseException]:
        def make() -> BaseException:
            try:
                action()
            except Exception as exc:
                return exc
            raise AssertionError("did not raise")

        return make

    return {
        "ValidationError": caught(lambda: RetrievedPodData.model_validate({"pod": 5})),
        "JSONDecodeError": caught(lambda: json.loads("{nope")),
        "UnicodeDecodeError": caught(lambda: b"\xff".decode("utf-8")),
    }


CASES: dict[str, Callable[[], BaseException]] = {
    f"{c.__module__}.{c.__qualname__}": (lambda c=c: c("why it was refused")) for c in REFUSALS
} | _foreign()


# ------------------------------------------------------------------ the table itself


def test_every_refusal_class_has_a_row_and_the_rows_are_kinds():
    assert REFUSALS, "no refusal classes found"
    for cls in REFUSALS:
        assert kind_of(cls) in OUTCOMES  # raises LookupError for a class of no kind
    for kind, outcome in OUTCOMES.items():
        assert kind.__bases__ == (Refusal,), f"{kind.__name__}: a kind derives from Refusal alone"
        assert grpc.StatusCode[outcome.grpc], outcome  # a real code name
        assert outcome.grpc in refusals.HTTP_OF_SITE_CODE, f"the gateway cannot turn {outcome.grpc} back"
    for code in refusals.HTTP_OF_SITE_CODE:
        assert grpc.StatusCode[code]


def test_names_of_refusals_are_unique():
    names = [cls.__name__ for cls in REFUSALS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize(
    "cls,kind",
    [
        (domain_errors.BadRequest, refusals.BadRequest),
        (domain_errors.NotFound, refusals.NotFound),
        (domain_errors.Forbidden, refusals.Forbidden),
        (domain_errors.Unavailable, refusals.Unavailable),
        (PodRejected, refusals.Rejected),
        (TransportError, refusals.Unreachable),
        (auth_errors.MissingToken, refusals.Unauthenticated),
        (auth_errors.WrongAudience, refusals.Unauthenticated),
        (auth_errors.IdPUnreachable, refusals.Unavailable),
        (auth_errors.NotAllowed, refusals.Forbidden),
        (auth_errors.MissingScope, refusals.Forbidden),
        (auth_errors.NoAccount, refusals.Forbidden),
        (auth_errors.ExchangeRefused, refusals.Forbidden),
        (routing.NoSite, refusals.Unroutable),
        (identities.IdentityUnusable, refusals.Invalid),
        (identities.IdentityRefused, refusals.Forbidden),
    ],
)
def test_each_error_answers_as_its_kind(cls, kind):
    assert kind_of(cls) is kind
    assert cls("x").status == OUTCOMES[kind].http


# Modules whose `raise X(...)` can reach an API while it answers a request.
ON_A_REQUEST = [
    "sidecars/core/domain/service.py",
    "sidecars/core/domain/staging.py",
    "sidecars/core/adapters/rest.py",
    "sidecars/core/adapters/grpc_api.py",
    "sidecars/core/adapters/authn.py",
    "interlink_provider/auth/mapping.py",
    "interlink_provider/auth/validate.py",
    "interlink_provider/auth/jwtparse.py",
    "interlink_provider/auth/tokenkind.py",
    "interlink_provider/auth/profile.py",
    "interlink_provider/pods/validate.py",
    "interlink_provider/gateway/server.py",
    "interlink_provider/gateway/identities.py",
    "interlink_provider/gateway/routing.py",
]
AT_START = {OSError, SystemExit}  # grpc_api.start_server and gateway.run: never while answering


def _names(module, tree: ast.Module) -> dict[str, object]:
    """What a name means in the module: its globals, builtins, and imports made inside functions too."""
    names: dict[str, object] = {**vars(builtins), **vars(module)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            source = importlib.import_module(node.module)
            names.update({alias.asname or alias.name: getattr(source, alias.name) for alias in node.names})
    return names


@pytest.mark.parametrize("path", ON_A_REQUEST)
def test_what_the_adapters_can_raise_is_in_the_table(path):
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    tree = ast.parse((ROOT / path).read_text())
    names = _names(module, tree)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        function = node.exc.func
        if isinstance(function, ast.Name):
            raised = names[function.id]
        elif isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
            raised = getattr(names[function.value.id], function.attr)
        else:
            raise AssertionError(f"{path}:{node.lineno}: cannot tell what is raised")
        assert inspect.isclass(raised), f"{path}:{node.lineno}"
        if raised not in AT_START:
            assert issubclass(raised, Refusal), f"{path}:{node.lineno} raises {raised.__name__}, which has no row"


# ------------------------------------------------------------------ the same answer everywhere


async def _raising_app(middleware, cases: dict[str, Callable[[], BaseException]] = CASES) -> TestClient:
    async def handler(request: web.Request) -> web.Response:
        raise cases[request.match_info["case"]]()

    app = web.Application(middlewares=[middleware])
    app.router.add_route("*", "/{case}", handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def _grpc_server() -> tuple[grpc.aio.Server, grpc.aio.Channel]:
    async def behaviour(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        async with grpc_api._mapped_errors(context, "Raise", "a test"):
            raise CASES[request.decode()]()
        return b""

    handler = grpc.unary_unary_rpc_method_handler(behaviour)  # bytes in, bytes out
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Refusals", {"Raise": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


async def test_rest_grpc_and_the_gateway_give_each_error_the_same_answer():
    site_rest = await _raising_app(rest.errors)
    gateway = await _raising_app(gateway_server.errors)
    server, channel = await _grpc_server()
    call = channel.unary_unary("/test.Refusals/Raise")
    try:
        for case, make in CASES.items():
            expected = answer(make())
            assert expected is not None, case

            response = await site_rest.post(f"/{case}")
            assert (response.status, await response.text()) == (expected.http, expected.message + "\n"), case
            challenge = response.headers.get("WWW-Authenticate")
            if expected.http == 401:
                code = getattr(expected.refusal, "code", "invalid_token")
                assert challenge == f'Bearer error="{code}"', case
            else:
                assert challenge is None, case

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(case.encode())
            assert (refused.value.code(), refused.value.details()) == (
                grpc.StatusCode[expected.grpc],
                expected.message,
            ), case

            response = await gateway.post(f"/{case}")
            if isinstance(expected.refusal, auth_errors.AuthError):  # at the gateway: a token it asked for
                wanted = (502, f"the gateway has no token for the site: {expected.refusal.message}\n")
            else:
                wanted = (expected.http, expected.message + "\n")
            assert (response.status, await response.text()) == wanted, case
    finally:
        await site_rest.close()
        await gateway.close()
        await channel.close()
        await server.stop(None)


async def test_the_gateway_turns_a_sites_grpc_code_back_into_http():
    codes = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
    cases: dict[str, Callable[[], BaseException]] = {
        code.name: (
            lambda code=code: grpc.aio.AioRpcError(
                code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="the site says no"
            )
        )
        for code in codes
    }
    gateway = await _raising_app(gateway_server.errors, cases)
    try:
        for code in codes:
            response = await gateway.post(f"/{code.name}")
            assert response.status == refusals.HTTP_OF_SITE_CODE.get(code.name, 500), code
            assert await response.text() == f"site: {code.name}: the site says no\n"
    finally:
        await gateway.close()


# ------------------------------------------------------------------ what users read, word for word


@pytest.mark.parametrize(
    "error,http,code,message",
    [
        (PodRejected("not a valid name", field="spec.containers[0].name"), 422, "INVALID_ARGUMENT",
         "pod rejected: spec.containers[0].name: not a valid name"),
        (TransportError("ssh login: no answer within 30s"), 503, "UNAVAILABLE",
         "the site cannot be reached: ssh login: no answer within 30s"),
        (auth_errors.MissingToken("needs a header"), 401, "UNAUTHENTICATED", "missing_token: needs a header"),
        (auth_errors.MissingScope("create needs compute.create"), 403, "PERMISSION_DENIED",
         "missing_scope: create needs compute.create"),
        (auth_errors.IdPUnreachable("cannot reach x"), 503, "UNAVAILABLE", "idp_unreachable: cannot reach x"),
        (domain_errors.Forbidden("pod a/b belongs to another identity"), 403, "PERMISSION_DENIED",
         "pod a/b belongs to another identity"),
        (domain_errors.NotFound("pod x is not known to this site"), 404, "NOT_FOUND",
         "pod x is not known to this site"),
        (routing.NoSite("names no site"), 422, "INVALID_ARGUMENT", "no site for this pod: names no site"),
        (identities.IdentityUnusable("not sent", "IdentityMissing"), 422, "INVALID_ARGUMENT",
         "IdentityMissing: not sent"),
        (identities.IdentityRefused("expired", "TokenExpired"), 403, "PERMISSION_DENIED", "TokenExpired: expired"),
        (CASES["JSONDecodeError"](), 400, "INVALID_ARGUMENT",
         "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (CASES["UnicodeDecodeError"](), 400, "INVALID_ARGUMENT", "the request body is not UTF-8"),
    ],
)  # fmt: skip
def test_the_words_users_see(error, http, code, message):
    refused = answer(error)
    assert refused is not None and (refused.http, refused.grpc, refused.message) == (http, code, message)


def test_a_bug_is_no_refusal():
    assert answer(KeyError("x")) is None and answer(RuntimeError("x")) is None
