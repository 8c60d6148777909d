"""Pipeline stages; each exposes run(cfg) and reads/writes files in its output directory."""
