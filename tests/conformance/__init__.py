"""Protocol-conformance suite: Autobahn|Testsuite's case categories as raw-socket tests."""

import pytest

# The shared assertions live outside test modules; have pytest explain their failures too.
pytest.register_assert_rewrite("tests.conformance.checks")
