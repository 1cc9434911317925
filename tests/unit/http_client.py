"""Calling an HTTP function the way functions-framework serves it, and reading its errors."""

from __future__ import annotations

from functions_framework import create_app


def client(target: str, folder: str | None = None):
    source = f"functions/{folder or target}/main.py"
    return create_app(target, source).test_client()


def assert_json_error(response, status: int) -> object:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()["detail"]
