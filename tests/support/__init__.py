"""What the suites share: manifest factories, a poller, a free port, the in-memory kernel, the
network-namespace helpers and the test oracles. Importable as ``support`` from every suite
(pytest's ``pythonpath`` puts tests/ on the path; the VM's run does too)."""
