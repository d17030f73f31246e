"""Developer tools: benchmarks, the seed scenarios (repro), the bcc trace,
the ABI check and the demo.  They may import anything in pyckpt; nothing in
pyckpt imports them but the CLI's verbs."""
