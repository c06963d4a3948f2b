import pytest

# The helpers in tests/support assert too: have pytest explain their failures as it does in test modules.
pytest.register_assert_rewrite("tests.support")
