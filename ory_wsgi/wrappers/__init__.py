"""One WSGI wrapper per box of the pipeline; `make_app` stacks them."""
