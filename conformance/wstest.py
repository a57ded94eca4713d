"""Launches Autobahn's `wstest` (autobahntestsuite 0.8.2, Python 2.7) from a directory
that `pip install --target` filled. A plain PYTHONPATH does not honour the `zope`
namespace package's .pth file; site.addsitedir does.

Usage: AUTOBAHN_SITE=<dir> python2.7 conformance/wstest.py -m fuzzingclient -s spec.json
"""
import os
import site
import sys

site.addsitedir(os.environ["AUTOBAHN_SITE"])

from autobahntestsuite import wstest  # noqa: E402

sys.argv[0] = "wstest"
wstest.run()
