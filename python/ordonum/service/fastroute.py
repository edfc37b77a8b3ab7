"""Hot routes served by plain Starlette routes, documented in OpenAPI from the same models.

Measured (profiled in process, this machine): on ``POST /v1/scan`` FastAPI's dependency and
body machinery (``solve_dependencies``, body to dict to model, response checks) cost more than
everything ordonum does, store lookup included. The two hot routes (scan, record a
dispensation) therefore run as Starlette ``Route`` endpoints inside the same app: same
middleware, same exception handlers, same problem documents. What FastAPI would have done
is done here explicitly and no less strictly:

- the body is validated straight from bytes by a pydantic ``TypeAdapter`` (``validate_json``,
  in Rust; unknown fields refused by the models' ``extra="forbid"``); a failure raises
  FastAPI's own ``RequestValidationError`` with ``body.``-prefixed locations, so the 422
  problem looks exactly like the other routes';
- authentication is the same :func:`~ordonum.service.deps.authenticate`;
- the OpenAPI operation (body schema, response schema, parameters, problem responses) is
  generated from the same pydantic models by :func:`document`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

__all__ = ["FastRoute", "document", "missing_header", "read_body"]

REF = "#/components/schemas/{model}"


async def read_body(request: Request, adapter: TypeAdapter[Any]) -> Any:
    """The request body validated by ``adapter`` (422 problem on failure)."""
    raw = await request.body()
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        errors: list[dict[str, Any]] = []
        for detail in exc.errors(include_url=False):
            err: dict[str, Any] = dict(detail)
            err["loc"] = ("body", *detail.get("loc", ()))
            err.pop("ctx", None)
            errors.append(err)
        raise RequestValidationError(errors) from None


def missing_header(name: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("header", name), "msg": "Field required", "type": "missing"}]
    )


@dataclass(frozen=True)
class FastRoute:
    path: str
    method: str
    endpoint: Callable[[Request], Awaitable[Response]]
    summary: str
    tags: list[str]
    body: TypeAdapter[Any]
    response: type[BaseModel]
    status: int = 200
    headers: list[dict[str, Any]] = field(default_factory=list)
    path_params: list[str] = field(default_factory=list)

    def route(self) -> Route:
        return _TemplatedRoute(
            self.path, self.endpoint, methods=[self.method], name=self.endpoint.__name__
        )


class _TemplatedRoute(Route):
    """A Starlette route that, like FastAPI's, puts itself in the scope when it matches: the
    request middleware labels metrics and logs with ``scope["route"].path`` (the template,
    not the path with its IDs)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def _add_schema(components: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    return schema


def document(openapi: dict[str, Any], routes: list[FastRoute]) -> None:
    """Add the operations of ``routes`` to an OpenAPI document (in place)."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for r in routes:
        body = _add_schema(components, r.body.json_schema(ref_template=REF))
        response_schema = _add_schema(
            components, r.response.model_json_schema(ref_template=REF, mode="serialization")
        )
        components.setdefault(r.response.__name__, response_schema)
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in r.path_params
        ] + r.headers
        operation: dict[str, Any] = {
            "tags": r.tags,
            "summary": r.summary,
            "operationId": r.endpoint.__name__,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body}},
            },
            "responses": {
                str(r.status): {
                    "description": "Successful Response",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF.format(model=r.response.__name__)}
                        }
                    },
                }
            },
        }
        if parameters:
            operation["parameters"] = parameters
        openapi.setdefault("paths", {}).setdefault(r.path, {})[r.method.lower()] = operation
