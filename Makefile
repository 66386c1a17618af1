.PHONY: setup demo test bench example

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench:
	bash scripts/setup.sh && .venv/bin/python -m benchmarks.run_all

# TSO end to end on CPU: tiny model matrix, verifier judge, 3 rounds, report (examples/tso_cpu)
example:
	bash scripts/setup.sh && bash examples/tso_cpu/run.sh
