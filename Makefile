# Shortcuts; the README's two commands are contrib/run and contrib/test (no make needed).
.PHONY: setup run test proto bench

setup:
	@contrib/setup.sh

run:
	contrib/run

test:
	contrib/test

proto: setup
	.venv/bin/python protos/generate.py

bench: setup
	.venv/bin/python -m tests.bench.api_bench
