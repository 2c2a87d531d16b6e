"""Shared test scaffolding: the one home of everything more than one test module uses (factories, a running
server, the CLI driver, the one ``wait_for``). Test modules import from here, never from each other."""
