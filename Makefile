.PHONY: setup demo lint test bench example

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh

lint: setup
	.venv/bin/ruff check .

# extra pytest arguments: make test ARGS="tests/pairs -x -q"
test:
	bash scripts/test.sh $(ARGS)

bench:
	bash scripts/setup.sh && .venv/bin/python -m benchmarks.run_all

# TSO end to end on CPU: tiny model matrix, verifier judge, 3 rounds, report (examples/tso_cpu)
example:
	bash scripts/setup.sh && bash examples/tso_cpu/run.sh
