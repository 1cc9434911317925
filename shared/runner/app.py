"""The runner's one WSGI app: every HTTP function, loaded by functions-framework from its
own folder, plus the operations endpoints, behind a path dispatcher."""

from __future__ import annotations

from collections.abc import Callable

from functions_framework import create_app

from shared.bootstrap import Services, get_services
from shared.ops.app import OPS_PATHS, create_ops_app
from shared.runner.dispatch import PathDispatcher, Route
from shared.runner.targets import HTTP_FUNCTIONS, FunctionTarget


def load_function_app(function: FunctionTarget) -> Callable:
    """The function's WSGI app, built as `functions-framework --target --source` builds it."""
    return create_app(function.target, str(function.source))


def build_runner_app(services: Callable[[], Services] = get_services) -> PathDispatcher:
    """Mount each function at its path (`/moderation_result/{task_id}` takes a subpath)."""
    routes = [
        Route(function.path, load_function_app(function), with_subpaths=function.takes_subpath)
        for function in HTTP_FUNCTIONS
        if function.path is not None
    ]
    ops = create_ops_app(services)
    routes += [Route(path, ops, with_subpaths=subpaths) for path, subpaths in OPS_PATHS]
    return PathDispatcher(routes)
