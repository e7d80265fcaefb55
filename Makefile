# The README's two commands are `make run` and `make test`; both set up what is missing first.
.PHONY: setup run test lint proto bench

setup:
	@contrib/setup.sh

run: setup
	@contrib/start-libvirtd.sh || echo "make run: libvirtd unavailable; zsd will report the host DEGRADED"
	.venv/bin/zsd run

lint: setup
	.venv/bin/ruff check zsd tests protos
	.venv/bin/ruff format --check zsd tests protos
	.venv/bin/mypy
	.venv/bin/python protos/generate.py --check

test: lint
	.venv/bin/python -m pytest

proto: setup
	.venv/bin/python protos/generate.py

bench: setup
	.venv/bin/python -m tests.bench.api_bench
