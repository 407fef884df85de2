"""The embedded default manifests: the seed's site-A/site-B pseudowire (`--manifests embedded`).

examples/seed/site-a.yaml and site-b.yaml are links to these files, so the demo, the tests and
the documentation show one and the same configuration.
"""

from pathlib import Path

DIRECTORY = Path(__file__).parent
