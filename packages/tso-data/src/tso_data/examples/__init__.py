"""Small, self-contained tasks the project writes itself, used by the CPU end-to-end
example (`examples/tso_cpu/`) and its tests."""
