"""Hello world: the baseline of the HTTP benches, served exactly like the real functions.

functions-framework --source bench/hello/main.py --target hello
"""

import flask
import functions_framework


@functions_framework.http
def hello(request: flask.Request) -> str:
    return "Hello, World!"
