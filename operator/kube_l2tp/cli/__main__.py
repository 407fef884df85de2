"""``python -m kube_l2tp.cli``: the same as the ``kube-l2tp`` command."""

import sys

from kube_l2tp.cli import main

sys.exit(main())
